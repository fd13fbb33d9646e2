// Command kflex is the command line of the kflex runtime: creating and inspecting
// shared heaps, verifying, compiling and running extensions, the runtime
// itself (serve), and the measurements and stress runs.
//
// Layer 9 (commands: cmd/kflex, cmd/kflex-bpf-conformance): the top; nothing
// imports it.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/kflex-go/kflex/verifier"
)

// command is one subcommand: its one-line summary, and run, which parses args
// itself and writes its output to out. subcommands: its first argument names
// one (heap create), whose usage a bad command line prints.
type command struct {
	summary     string
	run         func(args []string, out io.Writer) error
	hidden      bool
	subcommands bool
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
	fmt.Fprintln(w, "\n'kflex help <command>' or 'kflex <command> -h' describes one command;\n'kflex --version' prints the version.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status: 0 on success
// (and on help asked for, printed on out), 1 when the command failed, 2 on a
// bad command line (the usage then goes to errOut).
func run(args []string, out, errOut io.Writer) int {
	if len(args) == 0 {
		usage(errOut)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				return report(c, args[2:], c.run(append(args[2:], "-h"), out), false, errOut, out)
			}
			fmt.Fprintf(errOut, "kflex help: unknown command %q\n", args[1])
			return 2
		}
		usage(out)
		return 0
	case "-version", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(errOut, "kflex: unknown command %q\n\n", name)
		usage(errOut)
		return 2
	}
	w := &watchedWriter{w: out}
	return report(c, args[1:], c.run(args[1:], w), w.wrote, errOut, out)
}

// report prints err, the error of command c run with args (which wrote to
// out if wrote), and returns the exit status. A bad command line gets the
// command's usage on errOut. With --json, a command that failed without
// printing its JSON object gets {"error": ...} on out.
func report(c command, args []string, err error, wrote bool, errOut, out io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(errOut, "kflex:", err)
	if wantsJSON(args) && !wrote {
		jsonError(out, err)
	}
	if !errors.Is(err, errUsage) {
		return 1
	}
	if !c.hidden {
		fmt.Fprintln(errOut)
		commandUsage(c, args, errOut)
	}
	return 2
}

// commandUsage prints the usage of c (of its subcommand named in args, if
// it has subcommands and that one prints one).
func commandUsage(c command, args []string, w io.Writer) {
	if c.subcommands && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		var b bytes.Buffer
		if errors.Is(c.run([]string{args[0], "-h"}, &b), flag.ErrHelp) {
			w.Write(b.Bytes())
			return
		}
	}
	c.run([]string{"-h"}, w)
}

// errorJSON is what a command run with --json prints when it fails without
// printing its own object: the message, and for a program the verifier
// rejected, where and why, and the path to it.
type errorJSON struct {
	Error  string   `json:"error"`
	Insn   *int     `json:"insn,omitempty"`
	Reason string   `json:"reason,omitempty"`
	Log    []string `json:"log,omitempty"`
}

// writeJSON writes v as one indented JSON object.
func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nonNil is s, or an empty slice for nil: a list in JSON output is [] when
// empty, never null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func jsonError(out io.Writer, err error) {
	e := errorJSON{Error: err.Error()}
	var ve *verifier.Error
	if errors.As(err, &ve) {
		e.Insn, e.Reason, e.Log = &ve.Insn, ve.Reason, ve.Log
	}
	writeJSON(out, e)
}

// watchedWriter notes whether anything was written to it.
type watchedWriter struct {
	w     io.Writer
	wrote bool
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.wrote = w.wrote || len(p) > 0
	return w.w.Write(p)
}
