package cancel_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/verifier"
)

// lockAllocLoop: main takes the lock whose address is the context's first
// word (kept in r6), calls f, which allocates (kept in r6) and calls g,
// which loops. The allocation helper cancels the run, so it stops at g's
// back-edge.
var lockAllocLoop = fmt.Sprintf(`
	ldxdw %%r6, [%%r1+0]
	mov %%r1, %%r6
	call local mcs_lock
	call local f
	mov %%r1, %%r6
	call local mcs_unlock
	mov %%r0, 0
	exit
f:
	mov %%r1, 16
	call %[1]d
	mov %%r6, %%r0
	call local g
	mov %%r1, %%r6
	call %[2]d
	mov %%r0, 0
	exit
g:
	mov %%r0, 0
loop:
	add %%r0, 1
	jlt %%r0, 100, loop
	exit
mcs_lock:
	mov %%r0, 0
	exit
mcs_unlock:
	mov %%r0, 0
	exit`, abi.HelperAlloc, abi.HelperFree)

const (
	lockAddr  = 0xabc0
	allocAddr = 0x5000
)

// stopped verifies lockAllocLoop and runs it in the interpreter until the
// cancel: the table and the stack.
func stopped(t *testing.T) (*verifier.Result, []interp.Frame, func(uint64) uint64) {
	insns, err := bytecode.Assemble(lockAllocLoop)
	require.NoError(t, err)
	cfg := verifier.Config{CtxSize: 8, LockFunc: "mcs_lock", UnlockFunc: "mcs_unlock", Helpers: map[int32]verifier.Helper{
		abi.HelperAlloc: {Name: "alloc", Args: 1, HeapOrNull: true},
		abi.HelperFree:  {Name: "free", Args: 1}}}
	res, err := verifier.Verify(insns, cfg)
	require.NoError(t, err)
	m := interp.NewMachine()
	m.Helpers = map[int32]interp.Helper{
		abi.HelperAlloc: func(interp.Memory, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			m.Cancel()
			return allocAddr, nil
		},
	}
	p, err := interp.Load(insns)
	require.NoError(t, err)
	_, err = m.Run(p, abi.EncodeWords(lockAddr))
	var re *interp.RuntimeError
	require.True(t, errors.As(err, &re), "%v", err)
	require.ErrorIs(t, err, abi.ErrCancelled)
	read := func(addr uint64) uint64 {
		b, err := m.Bytes(addr, 8, false)
		require.NoError(t, err)
		return binary.LittleEndian.Uint64(b)
	}
	return res, re.Stack, read
}

// TestPlan: cancelled in g, the invocation holds main's lock and f's
// allocation, and nothing else.
func TestPlan(t *testing.T) {
	res, stack, read := stopped(t)
	require.Len(t, stack, 3)
	h, err := cancel.Plan(res, stack, read)
	require.NoError(t, err)
	assert.Equal(t, []uint64{lockAddr}, h.Locks())
	assert.Equal(t, []cancel.Allocation{{Ptr: allocAddr, Site: 9}}, h.Allocs())
	assert.Equal(t, []uint64{lockAddr}, h.Frames[2].Locks, "main's")
	assert.Len(t, h.Frames[1].Allocs, 1, "f's")
	assert.Empty(t, h.Frames[0].Locks)
	assert.Empty(t, h.Frames[0].Allocs, "g holds nothing")
}

// dropEntry is a table missing the entry at one slot.
type dropEntry struct {
	cancel.Table
	slot int
}

func (d dropEntry) HeldAt(pc int) (verifier.CancelPoint, bool) {
	if pc == d.slot {
		return verifier.CancelPoint{}, false
	}
	return d.Table.HeldAt(pc)
}

// plant is a table whose entry at one slot is changed.
type plant struct {
	cancel.Table
	slot int
	edit func(*verifier.CancelPoint)
}

func (p plant) HeldAt(pc int) (verifier.CancelPoint, bool) {
	cp, ok := p.Table.HeldAt(pc)
	if pc == p.slot {
		cp.Allocs = append([]verifier.Alloc(nil), cp.Allocs...) // the table's own stays
		p.edit(&cp)
	}
	return cp, ok
}

// TestPlanMismatch: where the stack and the table disagree, Plan says so
// rather than release less: a frame whose instruction has no entry (the
// planted miss: f's call site removed), a register the engine did not
// report for a caller, and a lock count its registers do not match.
func TestPlanMismatch(t *testing.T) {
	res, stack, read := stopped(t)
	fCall, gCall := stack[2].Insn, stack[1].Insn
	for name, tc := range map[string]struct {
		table cancel.Table
		want  string
	}{
		"f's call site missing": {dropEntry{res, fCall}, fmt.Sprintf("frame 2 (insn %d): no table entry", fCall)},
		"the stop missing":      {dropEntry{res, stack[0].Insn}, fmt.Sprintf("frame 0 (insn %d): no table entry", stack[0].Insn)},
		"r0 at a call site": {plant{res, gCall, func(cp *verifier.CancelPoint) { cp.Allocs[0].Reg = 0 }},
			"the table names r0 for the allocation made at 9, which the engine did not report"},
		"a lock without its register": {plant{res, fCall, func(cp *verifier.CancelPoint) { cp.Locks = 2 }}, "2 locks, 1 lock registers"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cancel.Plan(tc.table, stack, read)
			require.ErrorIs(t, err, cancel.ErrTableMismatch)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
