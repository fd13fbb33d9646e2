package interp_test

import (
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit/interp"
)

// BenchmarkPrograms runs the benchmark corpus and reports the interpreter's time
// per executed instruction. The same programs run in the kernel, side by side
// with this, in kernel.BenchmarkInterpVsKernel.
func BenchmarkPrograms(b *testing.B) {
	heapMem := make([]byte, 1<<20) // stands in for the heap: 1 MiB, as the kernel's arena
	want := benchprog.FillHashTable(heapMem)
	base := unsafe.Pointer(&heapMem[0])
	for _, bc := range benchprog.Corpus(want) {
		b.Run(bc.Name, func(b *testing.B) {
			insns, err := bytecode.Assemble(bc.Text)
			require.NoError(b, err)
			if bc.Heap {
				insns = append(asm.Instructions{asm.LoadImm(asm.R6, int64(uintptr(base)), asm.DWord)}, insns...)
			}
			p, err := interp.Load(insns)
			require.NoError(b, err)
			m := interp.NewMachine()
			m.AttachHeap(base, uint64(len(heapMem)), uint64(uintptr(base)))
			r0, err := m.Run(p, nil)
			require.NoError(b, err)
			if bc.Want != 0 {
				require.Equal(b, bc.Want, r0)
			}
			executed := m.Executed
			for b.Loop() {
				if _, err := m.Run(p, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(executed), "ns/insn")
			b.ReportMetric(float64(executed), "insns/run")
		})
	}
}
