package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"

	"github.com/kflex-go/kflex/bench"
	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/kernel"
)

func init() {
	commands["bench"] = command{summary: "measure the executors on the benchmark programs", run: runBench}
	commands["bench-holder"] = command{hidden: true, run: runBenchHolder}
}

func runBench(args []string, out io.Writer) error {
	fs := newFlags("bench", "[--json] [--time D] [--rounds N] [--kills N] [--robust BIN] jit|lock|recovery|cancel", `jit: run kflex's benchmark programs (a counter loop, hash-table lookup and
insert, a linked-list walk, a skip-list search) on the JIT, with every memory
access guarded (jit_ns), with loads unguarded (performance mode:
jit_perfmode_ns) and unguarded (jit_unguarded_ns), and on the interpreter
(interp_ns); a row per program, with the JIT's speedup over the interpreter,
the guards' overhead (guard_overhead_pct) and the instructions one run
executes (insns). Where this process can use BPF arenas (root, Linux 6.9+),
the programs also run in the kernel (XDP test runs) and in kflex's JIT on the
same arena, in the form the kernel accepts: kernel_ns, jit_arena_ns and their
ratio jit_vs_kernel (the kernel's time excludes the entry from user space;
"empty" measures that entry for both).
lock: the handoff latency of one lock between a goroutine and an extension
(handoff_ns), an extension's uncontended lock+unlock (extension_lock_unlock_ns),
and the cost of invoking an empty extension from an attached process
(invoke_us). Where this process can use BPF arenas, also one uncontended
lock+unlock of the lock's kernel form, the same bytecode in the kernel and in
kflex's JIT on one arena heap (the row kernel; lock_jit_vs_kernel is the
ratio net of each side's entry cost).
recovery: SIGKILL of a Go lock holder (a child process) -> the next waiter has
the lock (with the owner-died result), p50_us and p99_us over --kills kills,
for a Go waiter (row go) and a JIT extension waiting in a runtime (row jit),
and, in the same run, glibc's robust mutex measured by --robust
(bench/robustmutex, built by make bench) when it exists: with its own holder,
a forked child of one thread (row glibc), and with a holder the shape of a Go
process, 4 more threads and 12 MB touched (row glibc_go_sized). took_p50_us and
took_p99_us time the kill to the moment the waiter took the lock over (for the
JIT waiter, before its program and Invoke return), wake_* a Go waiter's wake,
seen_* and parks_* how waiters learned of the deaths; realtime_liveness is 1
when the holders' designated threads sleep at a real-time priority.
cancel: the time from a cancel request to the invocation's return, p50_us,
p99_us and max_us over --rounds/100 stops (at least 200) at random moments, in
the JIT and the interpreter, for a tight loop and a loop calling a helper
(rows jit, jit_helper, interp, interp_helper); and check_cost_pct, how much
slower the benchmark loop runs with the JIT's cancellation checks than
without, side by side.
Prints a table: a row per program (jit), waiter (recovery) or engine and loop
(cancel), then the figures that belong to no row. On a terminal, stderr shows
what is being measured meanwhile. With --json, one object: suite, rows (each
with its name and figures) and the figures of no row.`, out)
	asJSON := fs.Bool("json", false, "print one JSON object")
	per := fs.Duration("time", 200*time.Millisecond, "time spent on each measurement (jit, cancel; 1ms to 1h)")
	rounds := fs.Int("rounds", 100000, "handoffs and lock rounds (lock); cancellations: rounds/100 (cancel); 1 to 1e9")
	kills := fs.Int("kills", 500, "holders killed per waiter (recovery; 1 to 1e6)")
	robust := fs.String("robust", "bin/robust-pthread", "the robust-mutex baseline's binary (recovery)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if err := badFlags("bench", inRange("time", *per, time.Millisecond, time.Hour),
		inRange("rounds", *rounds, 1, 1_000_000_000), inRange("kills", *kills, 1, 1_000_000)); err != nil {
		return err
	}
	suite := fs.Arg(0)
	if !slices.Contains([]string{"jit", "lock", "recovery", "cancel"}, suite) {
		return fmt.Errorf("bench: %w: unknown suite %q (want jit, lock, recovery or cancel)", errUsage, suite)
	}
	var w io.Writer
	if isTerminal(os.Stderr) {
		w = os.Stderr
	}
	p := startProgress(w, "kflex bench "+suite, progressTick)
	figures, err := measure(p, suite, *per, *rounds, *kills, *robust)
	p.end()
	if err != nil {
		return err
	}
	rows, scalars := benchRows(figures)
	if *asJSON {
		return writeJSON(out, benchJSON(suite, rows, scalars))
	}
	return writeBenchTable(out, rows, scalars)
}

// measure runs suite, saying on p what it measures.
func measure(p *progress, suite string, per time.Duration, rounds, kills int, robust string) (figures map[string]float64, err error) {
	switch suite {
	case "jit":
		p.phase(fmt.Sprintf("%d programs on the JIT and the interpreter", len(benchprog.Corpus)))
		if figures, err = bench.MeasureJIT(per); err == nil {
			err = vsKernel(p, func() error {
				p.phase("the programs in the kernel and in the JIT on its arena")
				return bench.MeasureJITVsKernel(per, figures)
			})
		}
	case "lock":
		p.phase(fmt.Sprintf("lock handoffs, lock+unlock and invocations, %d rounds", rounds))
		if figures, err = bench.MeasureLock(rounds); err == nil {
			err = vsKernel(p, func() error {
				p.phase("lock+unlock in the kernel and in the JIT on its arena")
				return lockVsKernel(rounds, figures)
			})
		}
	case "recovery":
		p.phase(fmt.Sprintf("SIGKILL of a lock holder, %d kills for a Go and a JIT waiter", kills))
		if figures, err = bench.MeasureRecovery(kills, holderCommand); err == nil {
			err = robustKill(p, robust, kills, figures)
		}
	case "cancel":
		p.phase(fmt.Sprintf("%d cancellations per engine and loop, then the checks' cost", max(rounds/100, 200)))
		figures, err = bench.MeasureCancel(max(rounds/100, 200), per)
	}
	return figures, err
}

// vsKernel runs a comparison with the kernel, or says on stderr why it cannot
// run here.
func vsKernel(p *progress, measure func() error) error {
	if err := kernel.HaveArena(); err != nil {
		p.note("kflex bench: no kernel comparison: %v", err)
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

// robustKill adds glibc's robust mutex figures from the baseline binary's
// kill mode, or says on stderr why not: glibc.p50_us and .p99_us with the
// binary's own holder (a forked child: one thread, a few pages), and
// glibc_go_sized.* with a holder the shape of a Go process (4 more threads,
// 12 MB touched): the kernel's teardown of a dead holder's address space
// delays the waiter's wake on a kernel without full preemption, so the
// holder's shape matters (RATIONALE.md).
func robustKill(p *progress, bin string, kills int, figures map[string]float64) error {
	if _, err := os.Stat(bin); err != nil {
		p.note("kflex bench: no glibc comparison: %v (make bench builds it)", err)
		return nil
	}
	for _, h := range []struct {
		row         string
		threads, mb int
	}{{"glibc", 0, 0}, {"glibc_go_sized", 4, 12}} {
		p.phase(fmt.Sprintf("SIGKILL of a glibc robust mutex's holder (%d more threads, %d MB), %d kills", h.threads, h.mb, kills))
		out, err := exec.Command(bin, "kill", strconv.Itoa(kills), strconv.Itoa(h.threads), strconv.Itoa(h.mb)).Output()
		if err != nil {
			return fmt.Errorf("%s kill: %w", bin, err)
		}
		var n, threads, mb int
		var p50, p99 float64
		if _, err := fmt.Sscanf(string(out), "robust-pthread kill n=%d threads=%d mb=%d p50_us=%g p99_us=%g", &n, &threads, &mb, &p50, &p99); err != nil {
			return fmt.Errorf("%s kill: %q: %w", bin, out, err)
		}
		figures[h.row+".p50_us"], figures[h.row+".p99_us"] = p50, p99
	}
	return nil
}
