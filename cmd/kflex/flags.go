package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
)

// The command line's conventions, the same for every command:
//
//   - flags may come before, between and after the positional arguments
//     ("kflex heap info PATH --json"); after "--" everything is positional;
//   - -h or --help prints the command's usage on stdout and exits 0; a bad
//     command line prints what is wrong and the usage on stderr and exits 2
//     (run's report);
//   - numbers, sizes and durations out of range are refused as a bad command
//     line naming the flag and the value (inRange, atLeast, byteSize);
//   - with --json, stdout holds exactly one JSON object with snake_case keys:
//     the command's result, or, when it failed before printing one,
//     {"error": "..."} (jsonError); the message is on stderr as well.

// newFlags returns a flag set for a subcommand that reports errors instead of
// exiting or printing them (run prints them once, with the usage, on stderr),
// and prints its usage to out on -h (parse).
func newFlags(name, argsUsage, doc string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: kflex %s %s\n\n%s\n", name, argsUsage, doc)
		if hasFlags(fs) {
			fmt.Fprintln(out, "\nflags:")
			fs.SetOutput(out)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) (any bool) {
	fs.VisitAll(func(*flag.Flag) { any = true })
	return any
}

// parse parses args (flags anywhere, parseArgs) and checks the number of
// positional arguments.
func parse(fs *flag.FlagSet, args []string, npos int) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() != npos {
		return fmt.Errorf("%s: %w: want %d argument(s), got %d (see 'kflex %s -h')", fs.Name(), errUsage, npos, fs.NArg(), fs.Name())
	}
	return nil
}

// parseArgs parses args with flags before, between or after the positional
// arguments, which fs.Args then returns in their order. It prints the usage
// on -h (returning flag.ErrHelp) and nothing on an error, which wraps
// errUsage.
func parseArgs(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package calls it on errors too
	defer func() { fs.Usage = usage }()
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return err
		}
		if err != nil {
			return fmt.Errorf("%s: %w: %v", fs.Name(), errUsage, err)
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...) // "--" ends the flags
			break
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	// Parsing "--" and the positional arguments sets no flag and leaves
	// them as fs.Args.
	return fs.Parse(append([]string{"--"}, pos...))
}

// inRange refuses value v of flag name outside [lo, hi], naming both.
func inRange[T cmp.Ordered](name string, v, lo, hi T) error {
	if v < lo || v > hi {
		return fmt.Errorf("--%s %v: want %v to %v", name, v, lo, hi)
	}
	return nil
}

// atLeast refuses value v of flag name below lo, naming both.
func atLeast[T cmp.Ordered](name string, v, lo T) error {
	if v < lo {
		return fmt.Errorf("--%s %v: want at least %v", name, v, lo)
	}
	return nil
}

// badFlags is the first of errs (inRange's and atLeast's) as a bad command
// line of command cmd, or nil.
func badFlags(cmd string, errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("%s: %w: %v", cmd, errUsage, err)
		}
	}
	return nil
}

// byteSize is a size flag: a number of bytes with an optional K, M or G
// suffix (powers of 1024), at least 1. A bad value is refused when the flag
// is parsed, naming the flag and the value.
type byteSize uint64

func (s *byteSize) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return errors.New("want a number of bytes with an optional K, M or G suffix, at least 1")
	}
	*s = byteSize(n)
	return nil
}

// heapSize refuses a heap size that is not a power of two from 1M to 64G
// (heap.MinSize, heap.MaxSize), as inRange does, naming flag name.
func heapSize(name string, s byteSize) error {
	if n := uint64(s); n < heap.MinSize || n > heap.MaxSize || n&(n-1) != 0 {
		lo, hi := byteSize(heap.MinSize), byteSize(heap.MaxSize)
		return fmt.Errorf("--%s %s: want a power of two from %s to %s", name, s.String(), lo.String(), hi.String())
	}
	return nil
}

func (s *byteSize) String() string {
	if s == nil {
		return "0"
	}
	n := uint64(*s)
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// wantsJSON reports whether args ask for JSON output: a --json flag before
// any "--".
func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		switch strings.TrimLeft(a, "-") {
		case "json", "json=true", "json=1":
			return strings.HasPrefix(a, "-")
		}
	}
	return false
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
