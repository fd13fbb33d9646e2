package kernel

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit/interp"
)

// heapPrologue points r6 at the heap: the arena's user address cast to the
// kernel view. refArena makes the kernel associate the arena (the interpreter
// gets a plain constant of the same width instead).
func heapPrologue(a *Arena, r6 uint64, refArena bool) asm.Instructions {
	ref := asm.LoadImm(asm.R1, 0, asm.DWord)
	if refArena {
		ref = a.Ref(asm.R1)
	}
	return asm.Instructions{ref, asm.LoadImm(asm.R6, int64(r6), asm.DWord), castKern(asm.R6)}
}

// BenchmarkInterpVsKernel runs each benchmark program in the interpreter and in
// the kernel (XDP test runs, JIT-compiled) in the same benchmark, and reports
// both per-run times, the interpreter's time per executed instruction, and the
// ratio interpreter/kernel: the figure kflex's JIT has to close.
func BenchmarkInterpVsKernel(b *testing.B) {
	requireArena(b)
	a, err := NewArena(1 << 20)
	require.NoError(b, err)
	defer a.Close()
	for _, bc := range benchprog.Corpus {
		b.Run(bc.Name, func(b *testing.B) {
			if bc.Pointers {
				b.Skip("its data holds pointers, which kernel code must cast after every load")
			}
			body, err := bytecode.Assemble(bc.Text)
			require.NoError(b, err)
			kins, iins := body, body
			var want uint64
			if bc.Setup != nil {
				var r6 uint64
				r6, want = bc.Setup(a.Bytes()[:benchprog.Size], a.Base())
				kins = append(heapPrologue(a, r6, true), body...)
				iins = append(heapPrologue(a, r6, false), body...)
			}
			ip, err := interp.Load(iins)
			require.NoError(b, err)
			m := interp.NewMachine()
			m.AttachHeap(a.Pointer(), a.Size(), a.Base())
			r0, err := m.Run(ip, nil)
			require.NoError(b, err)
			if bc.Setup != nil {
				require.Equal(b, want, r0, "interpreter result")
			}
			executed := m.Executed

			kp, err := Load(kins, XDP, nil)
			require.NoError(b, err)
			defer kp.Close()
			kr0, _, err := kp.Bench(1)
			require.NoError(b, err)
			require.Equal(b, uint32(r0), kr0, "kernel and interpreter agree")

			start := time.Now()
			for b.Loop() {
				if _, err := m.Run(ip, nil); err != nil {
					b.Fatal(err)
				}
			}
			interpNs := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			_, kd, err := kp.Bench(max(b.N, 1000))
			require.NoError(b, err)
			kernelNs := float64(kd.Nanoseconds())
			if kernelNs == 0 {
				kernelNs = 1 // below the kernel's 1 ns resolution
			}
			b.ReportMetric(interpNs, "interp-ns/run")
			b.ReportMetric(kernelNs, "kernel-ns/run")
			b.ReportMetric(interpNs/float64(executed), "interp-ns/insn")
			b.ReportMetric(kernelNs/float64(executed), "kernel-ns/insn")
			b.ReportMetric(interpNs/kernelNs, "interp/kernel")
			b.ReportMetric(float64(executed), "insns/run")
		})
	}
}

func TestBenchProgramsAgree(t *testing.T) {
	requireArena(t)
	a, err := NewArena(1 << 20)
	require.NoError(t, err)
	defer a.Close()
	r6, want := benchprog.Corpus[1].Setup(a.Bytes()[:benchprog.Size], a.Base())
	body, err := bytecode.Assemble(benchprog.HashLookup)
	require.NoError(t, err)
	kp, err := Load(append(heapPrologue(a, r6, true), body...), XDP, nil)
	require.NoError(t, err, "the kernel accepts the hash-table program")
	defer kp.Close()
	kr0, _, err := kp.Bench(1)
	require.NoError(t, err)
	require.Equal(t, uint32(want), kr0, fmt.Sprintf("sum of values %d", want))
}
