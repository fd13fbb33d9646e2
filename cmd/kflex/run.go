package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/verifier"
)

func init() {
	commands["run"] = command{summary: "run a program once or N times and print r0 and the time per run", run: runRun}
}

// maxRepeat bounds --repeat: every run's time is kept for the percentiles.
const maxRepeat = 10_000_000

// runReport is what kflex run prints, and its JSON form. The times are of
// whole invocations (serve.Runtime.InvokeData).
type runReport struct {
	Program string  `json:"program"`
	Engine  string  `json:"engine"`
	Runs    int     `json:"runs"`
	R0      uint64  `json:"r0"` // of the last run
	MeanNs  float64 `json:"mean_ns"`
	MinNs   int64   `json:"min_ns"`
	P50Ns   int64   `json:"p50_ns"`
	MaxNs   int64   `json:"max_ns"`
}

func runRun(args []string, out io.Writer) error {
	fs := newFlags("run", "[--arg N | --ctx HEX] [--heap PATH] [--size SIZE] [--repeat N] [--engine jit|interp] [--budget D] [--json] PROG",
		`Run PROG (ELF object, kflex assembler text or raw bytecode) as kflex serve
would, like bpftool prog run: load it through the runtime's pipeline (verify,
compile), attach to a heap (a temporary one of --size, or the heap file at
--heap, created with --size if it does not exist), and invoke it once or
--repeat times on one executor of the chosen engine, with the runtime's
helpers, context and time budget. The context's arg is --arg (and r3 that
value as a heap address); or, with --ctx, the bytes HEX stand for a datagram:
they are copied into the heap before every run, the argument addresses them
and the context's data_len is their length (as kflex serve --udp passes
them). Prints r0 (of the last run) and the time per run: the mean, and with
--repeat the minimum, median and maximum. A time is a whole invocation:
binding an executor, the budget's watchdog and the engine's run (kflex bench
measures the engines alone). What the program traces (kflex_trace) is
printed as kflex serve prints it, on stderr with --json. A program the
verifier rejects is not run: the rejection is printed as kflex verify prints
it, exit status 1. A run that fails (a fault, its time budget running out,
SIGINT) ends the command with exit status 1, naming the run.`, out)
	arg := fs.Uint64("arg", 0, "the context's argument")
	ctxHex := fs.String("ctx", "", "data for the program, in hex (at most 64K bytes): its heap address is the argument")
	heapPath := fs.String("heap", "", "heap file to run on (default: a temporary heap)")
	size := byteSize(16 << 20)
	fs.Var(&size, "size", "`SIZE` of a heap created for the run (a power of two)")
	repeat := fs.Int("repeat", 1, fmt.Sprintf("runs (1 to %d)", maxRepeat))
	engine := fs.String("engine", "jit", "the engine: jit or interp")
	budget := fs.Duration("budget", serve.DefaultBudget, "time one run may take before it is cancelled (0: no limit)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if err := badFlags("run", inRange("repeat", *repeat, 1, maxRepeat), atLeast("budget", *budget, 0), heapSize("size", size)); err != nil {
		return err
	}
	opts := serve.Options{Budget: *budget, Trace: out} // kflex_trace's lines, as kflex serve prints them
	if *asJSON {
		opts.Trace = os.Stderr // stdout holds the one JSON object
	}
	switch *engine {
	case "jit":
		opts.JIT = 1
	case "interp":
		opts.Interpreted = 1
	default:
		return fmt.Errorf("run: %w: --engine %q: want jit or interp", errUsage, *engine)
	}
	if *budget == 0 {
		opts.Budget = -1 // no limit
	}
	data, err := runData(fs, *ctxHex)
	if err != nil {
		return err
	}
	path := fs.Arg(0)
	name, progs, objs, err := loadRunnable(path)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	opts.Objects = objs
	h, err := openOrCreateHeap(*heapPath, uint64(size))
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer h.Close()
	rt, err := serve.NewWith(h, progs, opts)
	if err != nil {
		var ve *verifier.Error
		if errors.As(err, &ve) {
			if !*asJSON {
				printRejection(out, path, ve)
			}
			return fmt.Errorf("run: %s rejected: %w", path, ve)
		}
		return fmt.Errorf("run: %w", err)
	}
	defer rt.Close()

	var dataOff uint64
	if data != nil {
		if dataOff, err = h.Alloc(uint64(max(len(data), 1))); err != nil {
			return fmt.Errorf("run: data of %d bytes: %w", len(data), err)
		}
		defer h.Free(dataOff)
		*arg = h.Base() + dataOff
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	times := make([]time.Duration, 0, *repeat)
	var r0 uint64
	for i := range *repeat {
		copy(h.Bytes(dataOff, uint64(len(data))), data) // each run gets the data as given
		t0 := time.Now()
		r0, err = rt.InvokeData(ctx, name, *arg, uint64(len(data)))
		d := time.Since(t0)
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("interrupted: %w", err)
			}
			return fmt.Errorf("run %s: run %d of %d: %w", path, i+1, *repeat, err)
		}
		times = append(times, d)
	}
	rep := runReport{Program: path, Engine: *engine, R0: r0}
	rep.summarize(times)
	if *asJSON {
		return writeJSON(out, rep)
	}
	rep.print(out)
	return nil
}

// runData is the data --ctx gives, or nil without it; --ctx and --arg
// exclude each other.
func runData(fs *flag.FlagSet, ctxHex string) ([]byte, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["ctx"] {
		return nil, nil
	}
	if set["arg"] {
		return nil, fmt.Errorf("run: %w: --ctx and --arg exclude each other (--ctx's address is the argument)", errUsage)
	}
	data, err := hex.DecodeString(strings.TrimPrefix(ctxHex, "0x"))
	if err != nil {
		return nil, fmt.Errorf("run: %w: --ctx %q: %v", errUsage, ctxHex, err)
	}
	if len(data) > serve.MaxDatagram {
		return nil, fmt.Errorf("run: %w: --ctx of %d bytes: want at most %d", errUsage, len(data), serve.MaxDatagram)
	}
	return data, nil
}

// summarize sets the runs' count and figures from their times (at least one).
func (r *runReport) summarize(times []time.Duration) {
	r.Runs = len(times)
	var total time.Duration
	for _, d := range times {
		total += d
	}
	r.MeanNs = float64(total.Nanoseconds()) / float64(len(times))
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	r.MinNs, r.P50Ns, r.MaxNs = sorted[0].Nanoseconds(), sorted[(len(sorted)-1)/2].Nanoseconds(), sorted[len(sorted)-1].Nanoseconds()
}

func (r *runReport) print(out io.Writer) {
	signed := ""
	if int64(r.R0) < 0 {
		signed = fmt.Sprintf(", %d", int64(r.R0))
	}
	fmt.Fprintf(out, "%s: r0 = %d (%#x%s)\n", r.Program, r.R0, r.R0, signed)
	mean := time.Duration(r.MeanNs).Round(time.Nanosecond)
	if r.Runs == 1 {
		fmt.Fprintf(out, "1 run on the %s: %v\n", r.Engine, mean)
		return
	}
	fmt.Fprintf(out, "%d runs on the %s: mean %v, min %v, p50 %v, max %v per run (r0 of the last)\n",
		r.Runs, r.Engine, mean, time.Duration(r.MinNs), time.Duration(r.P50Ns), time.Duration(r.MaxNs))
}
