package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kflex-go/kflex/userspace"
)

func init() {
	commands["status"] = command{summary: "list the programs and attached processes of a running runtime", run: runStatus}
}

func runStatus(args []string, out io.Writer) error {
	fs := newFlags("status", "--socket PATH [--json]", `List what the runtime at --socket (kflex serve) runs: its programs, with the
engine that runs each and its invocations and errors so far (cancellations
included), and the processes attached to it, with their owner-table slot and
when they attached (this command is one of them while it asks). A runtime
that does not answer within 10s (stopped, or wedged) is an error.`, out)
	socket := fs.String("socket", "", "the runtime's unix socket (required)")
	asJSON := fs.Bool("json", false, `print the status as JSON: {"executors", "busy", "programs": [{"name", "engine", "invocations", "errors"}], "processes": [{"pid", "slot", "since"}]}`)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *socket == "" {
		return fmt.Errorf("status: %w: need --socket (see 'kflex status -h')", errUsage)
	}
	var s userspace.Status
	if err := askRuntime(*socket, func(c *userspace.Client) (err error) {
		s, err = c.Status()
		return err
	}); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(s)
	}
	printStatus(out, s)
	return nil
}

// answerWithin bounds how long status and cancel wait for a runtime: one
// that is stopped (SIGSTOP) or wedged still takes the connection (the kernel
// queues it) and never answers, and these are the commands an operator runs
// when something is stuck.
var answerWithin = 10 * time.Second

// askRuntime attaches to the runtime at socket and runs ask with the
// client, giving up after answerWithin.
func askRuntime(socket string, ask func(*userspace.Client) error) error {
	done := make(chan error, 1)
	go func() {
		c, err := userspace.Dial(socket, nil)
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- ask(c)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(answerWithin):
		return fmt.Errorf("the kflex runtime at %s did not answer within %v (stopped, or wedged?)", socket, answerWithin)
	}
}

func printStatus(out io.Writer, s userspace.Status) {
	fmt.Fprintf(out, "executors: %d (%d busy)\n\n", s.Executors, s.Busy)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROGRAM\tENGINE\tINVOCATIONS\tERRORS")
	for _, p := range s.Programs {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", p.Name, p.Engine, p.Invocations, p.Errors)
	}
	fmt.Fprintln(w, "\nPID\tSLOT\tATTACHED")
	for _, p := range s.Processes {
		since := "-"
		if !p.Since.IsZero() {
			since = p.Since.Local().Format(time.DateTime)
		}
		fmt.Fprintf(w, "%d\t%d\t%s\n", p.PID, p.Slot, since)
	}
	w.Flush()
	if s.Truncated {
		fmt.Fprintln(out, "(lists cut to fit one message)")
	}
}
