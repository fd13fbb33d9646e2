package bench

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/kernel"
)

// MeasureJIT times every benchprog.Corpus program, for about per each, on
// kflex's JIT with every memory access guarded (PROGRAM.jit_ns), with loads
// unguarded (jit_perfmode_ns) and unguarded (jit_unguarded_ns), and on the
// interpreter (interp_ns); PROGRAM.speedup is the JIT's over the interpreter,
// guard_overhead_pct the guards' cost and insns the instructions one run
// executes (`kflex bench jit`).
func MeasureJIT(per time.Duration) (map[string]float64, error) {
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

// MeasureJITVsKernel adds to figures each program, in the form the kernel
// accepts, in the kernel (XDP test runs: PROGRAM.kernel_ns) and in kflex's JIT
// on the same arena (jit_arena_ns), and their ratio (jit_vs_kernel), after
// checking that both compute the same result. It needs BPF arenas
// (kernel.HaveArena).
func MeasureJITVsKernel(per time.Duration, figures map[string]float64) error {
	if err := kernel.HaveArena(); err != nil {
		return err
	}
	a, err := kernel.NewArena(1 << 20)
	if err != nil {
		return err
	}
	defer a.Close()
	m, err := jit.NewMachineIn(Region(a))
	if err != nil {
		return err
	}
	defer m.Close()
	progs, err := LoadCorpus(a)
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
