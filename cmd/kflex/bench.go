package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"time"

	"github.com/kflex-go/kflex/bench"
	"github.com/kflex-go/kflex/kernel"
)

func init() {
	commands["bench"] = command{summary: "measure the executors on the benchmark programs", run: runBench}
	commands["bench-holder"] = command{hidden: true, run: runBenchHolder}
}

func runBench(args []string, out io.Writer) error {
	fs := newFlags("bench", "[--json] [--time D] [--rounds N] [--kills N] [--robust BIN] jit|lock|recovery|cancel", `jit: run kflex's benchmark programs (a counter loop, hash-table lookup and
insert, a linked-list walk, a skip-list search) on the JIT, with every memory
access guarded, with loads unguarded (performance mode) and unguarded, and on the
interpreter. Reports ns per run, the JIT's speedup over the interpreter and the
guards' overhead. Where this process can use BPF arenas (root, Linux 6.9+), the
programs also run in the kernel (XDP test runs) and in kflex's JIT on the same
arena, in the form the kernel accepts: PROGRAM.kernel_ns, PROGRAM.jit_arena_ns
and their ratio PROGRAM.jit_vs_kernel (the kernel's time excludes the entry
from user space; "empty" measures that entry for both).
lock: the handoff latency of one lock between a goroutine and an extension, an
extension's uncontended lock+unlock, and the cost of invoking an empty extension
from an attached process. Where this process can use BPF arenas, also one
uncontended lock+unlock of the lock's kernel form, the same bytecode in the
kernel and in kflex's JIT on one arena heap (kernel.* figures; jit_vs_kernel
is the ratio net of each side's entry cost).
recovery: SIGKILL of a Go lock holder (a child process) -> the next waiter has
the lock (with the owner-died result), p50 and p99 in µs over --kills kills,
for a Go waiter (recovery.go_*) and a JIT extension waiting in a runtime
(recovery.jit_*), and, in the same run, glibc's robust mutex (recovery.glibc_*)
measured by --robust (bench/robustmutex, built by make bench) when it exists.
cancel: the time from a cancel request to the invocation's return, p50, p99 and
max over --rounds/100 stops (at least 200) at random moments, in the JIT and the
interpreter, for a tight loop and a loop calling a helper (jit_p50_us,
jit_helper_p99_us, ...); and check_cost_pct, how much slower the benchmark loop
runs with the JIT's cancellation checks than without, side by side.
With --json the figures are one flat JSON object.`, out)
	asJSON := fs.Bool("json", false, "print one flat JSON object")
	per := fs.Duration("time", 200*time.Millisecond, "time spent on each measurement (jit, cancel)")
	rounds := fs.Int("rounds", 100000, "handoffs and lock rounds (lock); cancellations: rounds/100 (cancel)")
	kills := fs.Int("kills", 500, "holders killed per waiter (recovery)")
	robust := fs.String("robust", "bin/robust-pthread", "the robust-mutex baseline's binary (recovery)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	var figures map[string]float64
	var err error
	switch fs.Arg(0) {
	case "jit":
		if figures, err = bench.MeasureJIT(*per); err == nil {
			err = vsKernel(func() error { return bench.MeasureJITVsKernel(*per, figures) })
		}
	case "lock":
		if figures, err = bench.MeasureLock(*rounds); err == nil {
			err = vsKernel(func() error { return lockVsKernel(*rounds, figures) })
		}
	case "recovery":
		if figures, err = bench.MeasureRecovery(*kills, holderCommand); err == nil {
			err = robustKill(*robust, *kills, figures)
		}
	case "cancel":
		figures, err = bench.MeasureCancel(max(*rounds/100, 200), *per)
	default:
		return fmt.Errorf("bench: %w: unknown suite %q (want jit, lock, recovery or cancel)", errUsage, fs.Arg(0))
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(figures)
	}
	keys := make([]string, 0, len(figures))
	for k := range figures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "%-40s %12.2f\n", k, figures[k])
	}
	return nil
}

// vsKernel runs a comparison with the kernel, or says on stderr why it cannot
// run here.
func vsKernel(measure func() error) error {
	if err := kernel.HaveArena(); err != nil {
		fmt.Fprintf(os.Stderr, "kflex bench: no kernel comparison: %v\n", err)
		return nil
	}
	return measure()
}

// lockVsKernel adds bench.MeasureLockUnlock's figures, prefixed "kernel.".
func lockVsKernel(rounds int, figures map[string]float64) error {
	k, err := bench.MeasureLockUnlock(max(rounds, 3000))
	if err != nil {
		return err
	}
	for name, v := range k {
		figures["kernel."+name] = v
	}
	return nil
}

// holderCommand is bench.MeasureRecovery's holder: this binary's bench-holder.
func holderCommand(path string, lock uint64) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	cmd := exec.Command(self, "bench-holder", path, strconv.FormatUint(lock, 10))
	cmd.Stderr = os.Stderr
	return cmd
}

// runBenchHolder is bench-holder PATH LOCK: bench.HoldAndWait.
func runBenchHolder(args []string, _ io.Writer) error {
	if len(args) != 2 {
		return fmt.Errorf("bench-holder: %w: want PATH LOCK", errUsage)
	}
	lock, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		return fmt.Errorf("bench-holder: %w: %v", errUsage, err)
	}
	return bench.HoldAndWait(args[0], lock)
}

// robustKill adds glibc's robust mutex figures (recovery.glibc_p50_us and
// _p99_us) from the baseline binary's kill mode, or says on stderr why not.
func robustKill(bin string, kills int, figures map[string]float64) error {
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintf(os.Stderr, "kflex bench: no glibc comparison: %v (make bench builds it)\n", err)
		return nil
	}
	out, err := exec.Command(bin, "kill", strconv.Itoa(kills)).Output()
	if err != nil {
		return fmt.Errorf("%s kill: %w", bin, err)
	}
	var n int
	var p50, p99 float64
	if _, err := fmt.Sscanf(string(out), "robust-pthread kill n=%d p50_us=%g p99_us=%g", &n, &p50, &p99); err != nil {
		return fmt.Errorf("%s kill: %q: %w", bin, out, err)
	}
	figures["recovery.glibc_p50_us"], figures["recovery.glibc_p99_us"] = p50, p99
	return nil
}
