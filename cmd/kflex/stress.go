package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"time"

	"github.com/kflex-go/kflex/stress"
)

func init() {
	commands["stress"] = command{summary: "SIGKILL lock holders, waiters and allocators at random; check recovery", run: runStress}
	commands["stress-worker"] = command{hidden: true, run: runStressWorker}
}

func runStress(args []string, out io.Writer) error {
	fs := newFlags("stress", "[--procs P] [--threads T] [--locks L] [--kills N | --duration D] [--seed S] [--heap PATH] [--runtime=false] [--kernel] [--json]",
		`Starts P worker processes (this binary, re-executed) of T goroutines each on
one heap. They take L locks, each guarding a pair of counters and a doubly
linked list of heap objects that a holder updates in steps, and allocate and
free the list's objects. The parent SIGKILLs a random worker while one of its
goroutines holds a lock, waits for one, is inside the allocator, or anywhere,
restarts it, and goes on for N kills or for D. A holder that gets the
owner-died result repairs torn data (repaired); torn data under a clean lock is
a violation; a lock wait over 2 s is a stuck waiter; at the end every lock is
taken once more, the dead are reaped and the heap is checked: objects, queue
nodes or owner slots that nothing accounts for are leaked. Beside them, the
extension runtime runs in a process of its own (one JIT and one interpreting
executor): its extension takes the same locks, checks and repairs the same
data, and is cancelled at random, while it waits, holds or runs
(cancellations); the runtime's process is killed and restarted like a worker,
aimed at moments when an executor holds a lock or waits; an executor whose
queue node stays stranded counts as stuck. With --kernel the heap is a BPF
arena (the host must offer them; --heap is refused) and goroutine 0 of every
worker is a kernel executor: it takes the locks with the lock's kernel form, run
in Linux by BPF_PROG_TEST_RUN, retrying the kernel's bounded waits (kernel
timeouts), finishing from Go a hand-off the kernel could not (unstuck), and
taking the lock from Go after four timeouts in a row (fallbacks).
The seed reproduces
the parent's schedule of kills, not the OS's timing.
Recovery latency: from the SIGKILL of a worker holding a lock to the next
acquisition of that lock (with the owner-died result), as the acquirer's clock
reads it.
Exit status 1 on any violation, stuck waiter, leak or unexplained exit.`, out)
	procs := fs.Int("procs", 4, "worker processes (1 to 64)")
	threads := fs.Int("threads", 4, "goroutines per worker (1 to 64)")
	locks := fs.Int("locks", 4, "locks (1 to 1024)")
	kills := fs.Int("kills", 0, "stop after N kills (1000 when --duration is not given)")
	duration := fs.Duration("duration", 0, "stop after this long (at most 24h)")
	seed := fs.Uint64("seed", 0, "the kill schedule's seed (0: from the clock; the report says which)")
	path := fs.String("heap", "", "heap file to create (default: a temporary file, removed at the end)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	withRuntime := fs.Bool("runtime", true, "run the extension runtime's executors on the same locks, cancelled at random")
	withKernel := fs.Bool("kernel", false, "goroutine 0 of every worker takes the locks in Linux, on a heap in a BPF arena")
	plant := fs.String("plant", "", "a planted bug the run must report: norepair or nolock (checks the harness)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := badFlags("stress", inRange("procs", *procs, 1, 64), inRange("threads", *threads, 1, 64),
		inRange("locks", *locks, 1, 1024), inRange("kills", *kills, 0, 10_000_000),
		inRange("duration", *duration, 0, 24*time.Hour)); err != nil {
		return err
	}
	if *plant != "" && *plant != "norepair" && *plant != "nolock" {
		return fmt.Errorf("stress: %w: --plant %q: want norepair or nolock", errUsage, *plant)
	}
	if *kills == 0 && *duration == 0 {
		*kills = 1000
	}
	cfg := stress.Config{Procs: *procs, Threads: *threads, Locks: *locks, Kills: *kills, Duration: *duration,
		Seed: *seed, HeapPath: *path, Plant: *plant, Runtime: *withRuntime, Kernel: *withKernel, Command: workerCommand}
	if isTerminal(os.Stderr) {
		cfg.Progress = func(r stress.Report) {
			fmt.Fprintf(os.Stderr, "\r%s %6.1fs", progressLine(r, *kills), r.DurationS)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := stress.Run(ctx, cfg)
	if cfg.Progress != nil {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSON(out, rep); err != nil {
			return err
		}
	} else {
		summary(out, rep)
	}
	if rep.Failed() {
		return fmt.Errorf("stress: %d violations, %d stuck, %d leaked, %d unexplained exits (seed %d)",
			rep.Violations, rep.Stuck, rep.Leaked, rep.Unaccounted, rep.Seed)
	}
	return nil
}

// progressLine is the terminal's progress: kills so far (of the target) and
// what went wrong so far.
func progressLine(r stress.Report, target int) string {
	kills := fmt.Sprint(r.Kills)
	if target > 0 {
		width := 30
		done := min(width, r.Kills*width/target)
		kills = fmt.Sprintf("[%s%s] %d/%d", strings.Repeat("#", done), strings.Repeat(".", width-done), r.Kills, target)
	}
	return fmt.Sprintf("kflex stress: %s kills, %d recoveries, %d violations, %d stuck", kills, r.Recoveries, r.Violations, r.Stuck)
}

// summary prints the human report.
func summary(out io.Writer, r stress.Report) {
	fmt.Fprintf(out, "kflex stress: %d processes x %d goroutines on %d locks, seed %d, %.1f s\n", r.Procs, r.Threads, r.Locks, r.Seed, r.DurationS)
	fmt.Fprintf(out, "  kills         %d (holding a lock %d, waiting %d, in the allocator %d, elsewhere %d; of the runtime %d)\n",
		r.Kills, r.KilledHolding, r.KilledWaiting, r.KilledAllocator, r.KilledOther, r.KilledRuntime)
	fmt.Fprintf(out, "  recoveries    %d (torn data repaired %d); kill -> next acquisition p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us (%d samples, %d of 9 ms or more)\n",
		r.Recoveries, r.Repaired, r.RecoveryP50us, r.RecoveryP90us, r.RecoveryP99us, r.RecoveryMaxUs, r.RecoverySamples, r.RecoveryParked)
	fmt.Fprintf(out, "  acquisitions  %d (by extensions %d, cancelled %d); longest lock wait %.1f ms\n",
		r.Acquisitions, r.ExtensionAcquisitions, r.Cancellations, r.MaxWaitMs)
	if r.KernelAcquisitions > 0 || r.KernelTimeouts > 0 {
		fmt.Fprintf(out, "  kernel        %d acquisitions in Linux; %d bounded waits timed out and retried, %d hand-offs finished from Go, %d acquisitions made from Go after 4 timeouts\n",
			r.KernelAcquisitions, r.KernelTimeouts, r.KernelUnstuck, r.KernelFallbacks)
	}
	fmt.Fprintf(out, "  orphans       %d objects killed outside the lists, explained by hold words, freed; %d stranded by kills of the runtime while it started\n",
		r.Orphans, r.StrandedAtStart)
	fmt.Fprintf(out, "  violations %d, stuck %d, leaked %d (objects %d, queue nodes %d, owner slots %d), unexplained exits %d\n",
		r.Violations, r.Stuck, r.Leaked, r.LeakedObjects, r.LeakedNodes, r.LeakedSlots, r.Unaccounted)
	for _, p := range r.Problems {
		fmt.Fprintf(out, "  problem: %s\n", p)
	}
	if !r.Failed() {
		fmt.Fprintln(out, "  ok")
	}
}

// workerCommand is stress.Run's worker: this binary's stress-worker.
// KFLEX_CLI lets the command's test binary stand in for kflex.
func workerCommand() *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	cmd := exec.Command(self, "stress-worker")
	cmd.Env = append(os.Environ(), "KFLEX_CLI=1")
	cmd.Stderr = os.Stderr
	return cmd
}

// runStressWorker is stress-worker: stress.WorkerMain, in a process that
// stress.Run started.
func runStressWorker(_ []string, _ io.Writer) error {
	if !stress.IsWorker() {
		return fmt.Errorf("stress-worker: %w: started by kflex stress only (%s unset)", errUsage, stress.WorkerEnv)
	}
	return stress.WorkerMain()
}
