package verifier

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/benchprog"
)

// bigProgram is n instructions of arithmetic, stack traffic and forward
// branches, ending in exit.
func bigProgram(n int) asm.Instructions {
	var b strings.Builder
	b.WriteString("mov %r0, 0\nmov %r3, 1\nstdw [%r10-8], 0\n")
	for i := 0; i < n-4; i += 4 {
		fmt.Fprintf(&b, "add %%r0, %d\nldxdw %%r3, [%%r10-8]\njgt %%r0, %d, +1\nstxdw [%%r10-8], %%r0\n", i%7+1, i)
	}
	b.WriteString("exit\n")
	insns, err := bytecode.Assemble(b.String())
	if err != nil {
		panic(err)
	}
	return insns
}

// BenchmarkVerify reports verification time per 1,000 instructions on programs
// of 1,000 and 100,000 instructions.
func BenchmarkVerify(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("insns=%d", n), func(b *testing.B) {
			p := bigProgram(n)
			for b.Loop() {
				if _, err := Verify(p, testConfig); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(p))*1000/1e3, "µs/1k-insns")
		})
	}
}

// TestCorpusGuards reports, per benchmark program, how many memory accesses
// the verifier places in the stack or context. The corpus's data structures
// are in the heap, reached through numbers, so their accesses keep their guards
// until the analysis tracks heap pointers (the goal is 80% elided).
func TestCorpusGuards(t *testing.T) {
	for _, bc := range benchprog.Corpus {
		insns, err := bytecode.Assemble(bc.Text)
		require.NoError(t, err)
		if bc.Setup != nil {
			insns = append(asm.Instructions{asm.LoadImm(asm.R6, 1<<30, asm.DWord)}, insns...)
		}
		r, err := Verify(insns, testConfig)
		require.NoError(t, err, bc.Name)
		t.Logf("%-16s %3d memory accesses, %3d elided", bc.Name, r.GuardsTotal, r.GuardsElided)
	}
}
