// Command kflex is the command line of the kflex runtime: creating and inspecting
// shared heaps, and a demo of processes sharing a heap and its locks.
//
// Layer 9 (commands: cmd/kflex, cmd/kflex-bpf-conformance): the top; nothing
// imports it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand: its one-line summary, and run, which parses args
// itself and writes its output to out.
type command struct {
	summary string
	run     func(args []string, out io.Writer) error
	hidden  bool
}

var commands = map[string]command{}

// errUsage marks an error in the command line itself (exit status 2).
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kflex <command> [arguments]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\n'kflex help <command>' or 'kflex <command> -h' describes one command.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, out, errOut io.Writer) int {
	if len(args) == 0 {
		usage(errOut)
		return 2
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return report(c.run([]string{"-h"}, out), errOut)
			}
			fmt.Fprintf(errOut, "kflex help: unknown command %q\n", args[1])
			return 2
		}
		usage(out)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(errOut, "kflex: unknown command %q\n\n", name)
		usage(errOut)
		return 2
	}
	return report(c.run(args[1:], out), errOut)
}

func report(err error, errOut io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(errOut, "kflex:", err)
		return 2
	default:
		fmt.Fprintln(errOut, "kflex:", err)
		return 1
	}
}

// newFlags returns a flag set for a subcommand that reports errors instead of
// exiting, and prints its usage to out on -h.
func newFlags(name, argsUsage, doc string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: kflex %s %s\n\n%s\n", name, argsUsage, doc)
		if hasFlags(fs) {
			fmt.Fprintln(out, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) (any bool) {
	fs.VisitAll(func(*flag.Flag) { any = true })
	return any
}

// parse parses args and checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, npos int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%s: %w: %v", fs.Name(), errUsage, err)
	}
	if fs.NArg() != npos {
		return fmt.Errorf("%s: %w: want %d argument(s), got %d (see 'kflex %s -h')", fs.Name(), errUsage, npos, fs.NArg(), fs.Name())
	}
	return nil
}
