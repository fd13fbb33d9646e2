package kernel_test

// An external test package: the harness it uses (bench) imports kernel.

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bench"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/verifier"
)

// BenchmarkExecutorsVsKernel runs each benchmark program, in the form the
// kernel accepts (benchprog.BuildArena: the same bytecode everywhere, the data
// in one arena), in the interpreter, in kflex's JIT (every access guarded, with
// the guards the verifier keeps, and unguarded) and in the kernel (XDP test runs, JIT-compiled), side by side, and
// reports the per-run times and the ratios to the kernel. The kernel's figure is
// its own per-iteration time inside one test run; kflex's includes the entry
// from Go, which the "empty" program measures for both.
func BenchmarkExecutorsVsKernel(b *testing.B) {
	kernel.RequireArena(b)
	a, err := kernel.NewArena(1 << 20)
	require.NoError(b, err)
	defer a.Close()
	jm, err := jit.NewMachineIn(bench.Region(a))
	require.NoError(b, err)
	defer jm.Close()
	im := interp.NewMachine()
	im.AttachHeap(a.Pointer(), a.Size(), a.Base())
	progs, err := bench.LoadCorpus(a)
	require.NoError(b, err, "the kernel accepts every program")
	for _, bc := range progs {
		defer bc.Kernel.Close()
		b.Run(bc.Name, func(b *testing.B) {
			kp, ours, want := bc.Kernel, bc.Ours, bc.Want
			// The runtime's pipeline (with no context or helpers): both
			// engines from one validated program, the JIT with the
			// verifier's guards.
			lp, err := loader.Load(ours, loader.Options{JIT: true, Interp: true, Config: &verifier.Config{}})
			require.NoError(b, err)
			defer lp.Close()
			runs := map[string]func() (uint64, error){
				"interp":       func() (uint64, error) { return im.Run(lp.Interp, nil) },
				"jit-verified": func() (uint64, error) { return jm.Run(lp.JIT, nil) },
			}
			for name, o := range map[string]jit.Options{"jit": {Guard: jit.GuardAll}, "jit-unguarded": {Guard: jit.GuardNone}} {
				p, err := jit.CompileWith(ours, o)
				require.NoError(b, err)
				defer p.Close()
				runs[name] = func() (uint64, error) { return jm.Run(p, nil) }
			}
			kr0, _, err := kp.Bench(1)
			require.NoError(b, err)
			for name, run := range runs {
				r0, err := run()
				require.NoError(b, err, name)
				require.Equal(b, uint32(r0), kr0, "%s and the kernel agree", name)
				if bc.HasWant {
					require.Equal(b, want, r0, name)
				}
			}
			executed := float64(im.Executed)

			ns := map[string]float64{}
			for range 3 { // interleave, so that a noisy moment hits every executor
				for name, run := range runs {
					start, n := time.Now(), max(b.N/3, 1)
					for range n {
						if _, err := run(); err != nil {
							b.Fatal(err)
						}
					}
					ns[name] += float64(time.Since(start).Nanoseconds()) / float64(n) / 3
				}
				_, kd, err := kp.Bench(max(b.N/3, 1000))
				require.NoError(b, err)
				ns["kernel"] += max(float64(kd.Nanoseconds()), 1) / 3 // 1 ns is the kernel's resolution
			}
			for name, v := range ns {
				b.ReportMetric(v, name+"-ns/run")
			}
			b.ReportMetric(ns["interp"]/executed, "interp-ns/insn")
			b.ReportMetric(ns["interp"]/ns["kernel"], "interp/kernel")
			b.ReportMetric(ns["jit"]/ns["kernel"], "jit/kernel")
			b.ReportMetric(ns["jit-verified"]/ns["kernel"], "verified/kernel")
			b.ReportMetric(ns["jit-unguarded"]/ns["kernel"], "unguarded/kernel")
			b.ReportMetric(executed, "insns/run")
		})
	}
}

// BenchmarkLockUnlockVsKernel reports bench.MeasureLockUnlock's figures: one
// uncontended lock+unlock of the same bytecode in kflex's JIT and in Linux.
func BenchmarkLockUnlockVsKernel(b *testing.B) {
	kernel.RequireArena(b)
	for b.Loop() {
		figures, err := bench.MeasureLockUnlock(300000)
		require.NoError(b, err)
		for k, v := range figures {
			b.ReportMetric(v, k)
		}
	}
}
