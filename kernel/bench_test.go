package kernel

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/benchprog"
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
