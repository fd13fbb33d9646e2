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
when they attached (this command is one of them while it asks).`, out)
	socket := fs.String("socket", "", "the runtime's unix socket (required)")
	asJSON := fs.Bool("json", false, `print the status as JSON: {"executors", "busy", "programs": [{"name", "engine", "invocations", "errors"}], "processes": [{"pid", "slot", "since"}]}`)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *socket == "" {
		return fmt.Errorf("status: %w: need --socket (see 'kflex status -h')", errUsage)
	}
	c, err := userspace.Dial(*socket, nil)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer c.Close()
	s, err := c.Status()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(s)
	}
	printStatus(out, s)
	return nil
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
