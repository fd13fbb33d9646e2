package main

import (
	"fmt"
	"io"

	"github.com/kflex-go/kflex/userspace"
)

func init() {
	commands["cancel"] = command{summary: "cancel the running invocations of an extension in a runtime", run: runCancel}
}

func runCancel(args []string, out io.Writer) error {
	fs := newFlags("cancel", "--socket PATH [--json] PROGRAM", `Cancel every invocation of extension PROGRAM running in the runtime at
--socket (kflex serve), whichever process made it: each stops at its next
cancellation point, what it holds is released (its locks pass on with the
owner-died result), and its caller gets a cancellation naming the instruction.
Prints how many were cancelled. A runtime that does not answer within 10s is
an error.`, out)
	socket := fs.String("socket", "", "the runtime's unix socket (required)")
	asJSON := fs.Bool("json", false, `print {"program": ..., "cancelled": N}`)
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if *socket == "" {
		return fmt.Errorf("cancel: %w: need --socket (see 'kflex cancel -h')", errUsage)
	}
	var n int
	if err := askRuntime(*socket, func(c *userspace.Client) (err error) {
		n, err = c.CancelProgram(fs.Arg(0))
		return err
	}); err != nil {
		return fmt.Errorf("cancel %s: %w", fs.Arg(0), err)
	}
	if *asJSON {
		return writeJSON(out, map[string]any{"program": fs.Arg(0), "cancelled": n})
	}
	fmt.Fprintf(out, "cancelled %d invocation(s) of %s\n", n, fs.Arg(0))
	return nil
}
