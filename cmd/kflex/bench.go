package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
	"unsafe"

	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

func init() {
	commands["bench"] = command{summary: "measure the executors on the benchmark programs", run: runBench}
}

func runBench(args []string, out io.Writer) error {
	fs := newFlags("bench", "[--json] [--time D] [--rounds N] jit|lock", `jit: run kflex's benchmark programs (a counter loop, hash-table lookup and
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
With --json the figures are one flat JSON object.`, out)
	asJSON := fs.Bool("json", false, "print one flat JSON object")
	per := fs.Duration("time", 200*time.Millisecond, "time spent on each measurement (jit)")
	rounds := fs.Int("rounds", 100000, "handoffs and lock rounds (lock)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	var figures map[string]float64
	var err error
	switch fs.Arg(0) {
	case "jit":
		if figures, err = benchJIT(*per); err == nil {
			err = benchVsKernel(*per, figures)
		}
	case "lock":
		figures, err = serve.MeasureLock(*rounds, func(s string) (serve.Invoker, error) { return userspace.Dial(s, nil) })
		if err == nil {
			err = benchLockVsKernel(*rounds, figures)
		}
	default:
		return fmt.Errorf("bench: %w: unknown suite %q (want jit or lock)", errUsage, fs.Arg(0))
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

// benchJIT measures every corpus program; keys are "PROGRAM.FIGURE".
func benchJIT(per time.Duration) (map[string]float64, error) {
	m, err := jit.NewMachine(1 << 20)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	const dataOff = 256 << 10
	sb := m.Sandbox()
	im := interp.NewMachine()
	im.AttachHeap(unsafe.Pointer(&sb[0]), uint64(len(sb)), m.Base())
	figures := map[string]float64{}
	for _, bc := range benchprog.Corpus {
		insns, _, err := bc.Build(sb[dataOff:dataOff+benchprog.Size], m.Base()+dataOff)
		if err != nil {
			return nil, err
		}
		ns := map[string]float64{}
		for name, g := range map[string]jit.Guard{"jit_ns": jit.GuardAll, "jit_perfmode_ns": jit.GuardStores, "jit_unguarded_ns": jit.GuardNone} {
			p, err := jit.CompileGuarded(insns, g)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", bc.Name, err)
			}
			ns[name], err = timeRuns(per, func() error { _, err := m.Run(p, nil); return err })
			p.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", bc.Name, err)
			}
		}
		ip, err := interp.Load(insns)
		if err != nil {
			return nil, err
		}
		if ns["interp_ns"], err = timeRuns(per, func() error { _, err := im.Run(ip, nil); return err }); err != nil {
			return nil, fmt.Errorf("%s: %w", bc.Name, err)
		}
		for k, v := range ns {
			figures[bc.Name+"."+k] = v
		}
		figures[bc.Name+".speedup"] = ns["interp_ns"] / ns["jit_ns"]
		figures[bc.Name+".guard_overhead_pct"] = 100 * (ns["jit_ns"]/ns["jit_unguarded_ns"] - 1)
		figures[bc.Name+".insns"] = float64(im.Executed)
	}
	return figures, nil
}

// benchVsKernel adds the kernel comparison to figures, or says on stderr why
// it cannot run here.
func benchVsKernel(per time.Duration, figures map[string]float64) error {
	if err := kernel.HaveArena(); err != nil {
		fmt.Fprintf(os.Stderr, "kflex bench: no kernel comparison: %v\n", err)
		return nil
	}
	a, err := kernel.NewArena(1 << 20)
	if err != nil {
		return err
	}
	defer a.Close()
	m, err := jit.NewMachineIn(a.Region())
	if err != nil {
		return err
	}
	defer m.Close()
	progs, err := kernel.LoadCorpus(a)
	if err != nil {
		return err
	}
	for _, bc := range progs {
		defer bc.Kernel.Close()
		p, err := jit.Compile(bc.Ours)
		if err != nil {
			return fmt.Errorf("%s: %w", bc.Name, err)
		}
		defer p.Close()
		r0, err := m.Run(p, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", bc.Name, err)
		}
		kr0, _, err := bc.Kernel.Bench(1)
		if err != nil {
			return fmt.Errorf("%s in the kernel: %w", bc.Name, err)
		}
		if uint32(r0) != kr0 || (bc.HasWant && r0 != bc.Want) {
			return fmt.Errorf("%s: the JIT computed %#x, the kernel %#x, want %#x", bc.Name, r0, kr0, bc.Want)
		}
		jns, err := timeRuns(per, func() error { _, err := m.Run(p, nil); return err })
		if err != nil {
			return fmt.Errorf("%s: %w", bc.Name, err)
		}
		// The kernel times its own loop; ask for about as many runs as fit in per.
		_, kd, err := bc.Kernel.Bench(max(int(per.Nanoseconds()/int64(max(jns, 1))), 1000))
		if err != nil {
			return fmt.Errorf("%s in the kernel: %w", bc.Name, err)
		}
		kns := max(float64(kd.Nanoseconds()), 1) // the kernel's resolution is 1 ns
		figures[bc.Name+".jit_arena_ns"] = jns
		figures[bc.Name+".kernel_ns"] = kns
		figures[bc.Name+".jit_vs_kernel"] = jns / kns
	}
	return nil
}

// benchLockVsKernel adds kernel.MeasureLockUnlock's figures, prefixed
// "kernel.", or says on stderr why it cannot run here.
func benchLockVsKernel(rounds int, figures map[string]float64) error {
	if err := kernel.HaveArena(); err != nil {
		fmt.Fprintf(os.Stderr, "kflex bench: no kernel comparison: %v\n", err)
		return nil
	}
	k, err := kernel.MeasureLockUnlock(max(rounds, 3000))
	if err != nil {
		return err
	}
	for name, v := range k {
		figures["kernel."+name] = v
	}
	return nil
}

// timeRuns calls run repeatedly for about d and returns nanoseconds per call.
func timeRuns(d time.Duration, run func() error) (float64, error) {
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		for range 64 {
			if err := run(); err != nil {
				return 0, err
			}
		}
		n += 64
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n), nil
}
