package verifier

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
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
// the verifier proves need no guard, with the data structure's address passed
// two ways: as a constant (a number: its first access is guarded) and as the
// runtime passes a pointer argument, in r3 (checked at entry). The goal is
// 80%; pointer chasing keeps one sanitizing access per loaded pointer.
func TestCorpusGuards(t *testing.T) {
	var elided, total [2]int
	for _, bc := range benchprog.Corpus {
		insns, err := bytecode.Assemble(bc.Uncast())
		require.NoError(t, err)
		var counts [2]string
		for i, prologue := range []asm.Instruction{asm.LoadImm(asm.R6, 1<<30, asm.DWord), asm.Mov.Reg(asm.R6, asm.R3)} {
			p := insns
			if bc.Setup != nil {
				p = append(asm.Instructions{prologue}, insns...)
			}
			cfg := testConfig
			cfg.EntryArg = true
			r, err := Verify(p, cfg)
			require.NoError(t, err, bc.Name)
			elided[i] += r.GuardsElided
			total[i] += r.GuardsTotal
			counts[i] = fmt.Sprintf("%d of %d", r.GuardsElided, r.GuardsTotal)
		}
		t.Logf("%-16s constant: %-8s argument: %s", bc.Name, counts[0], counts[1])
	}
	t.Logf("total: constant %d of %d, argument %d of %d (%.0f%%)", elided[0], total[0], elided[1], total[1],
		100*float64(elided[1])/float64(total[1]))
	assert.GreaterOrEqual(t, elided[1], 10, "elided with the pointer argument (13 accesses: 10 measured)")
	assert.Greater(t, elided[1], elided[0], "a checked argument must save guards over a constant")
}
