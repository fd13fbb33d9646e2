package interp_test

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit/interp"
)

// BenchmarkPrograms runs the benchmark corpus and reports the interpreter's time
// per executed instruction. The same programs run in the kernel, side by side
// with this, in kernel.BenchmarkInterpVsKernel.
func BenchmarkPrograms(b *testing.B) {
	heapMem := make([]byte, benchprog.Size) // stands in for the heap
	base := unsafe.Pointer(&heapMem[0])
	for _, bc := range benchprog.Corpus {
		b.Run(bc.Name, func(b *testing.B) {
			insns, want, err := bc.Build(heapMem, uint64(uintptr(base)))
			require.NoError(b, err)
			p, err := interp.Load(insns)
			require.NoError(b, err)
			m := interp.NewMachine()
			m.AttachHeap(base, uint64(len(heapMem)), uint64(uintptr(base)))
			r0, err := m.Run(p, nil)
			require.NoError(b, err)
			if bc.Setup != nil {
				require.Equal(b, want, r0)
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
