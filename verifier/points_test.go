package verifier

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
)

// lockSubs are stubs of the lock subprograms, for Config{LockFunc: "lock",
// UnlockFunc: "unlock"}.
const lockSubs = "\nlock:\nmov %r0, 0\nexit\nunlock:\nmov %r0, 0\nexit"

// TestCallTable: every bpf-to-bpf call site has an entry saying what the
// caller holds while the callee runs, so that a cancellation point inside a
// subprogram, whose own entry counts only its frame, is completed by its
// callers' call sites; HeldAt finds both kinds.
func TestCallTable(t *testing.T) {
	cfg := testConfig
	cfg.LockFunc, cfg.UnlockFunc = "lock", "unlock"
	insns, err := bytecode.Assemble(`
		ldxdw %r6, [%r1+0]
		mov %r1, %r6
		call local lock
		call local f
		mov %r1, %r6
		call local unlock
		mov %r0, 0
		exit
	f:
		mov %r0, 0
	loop:
		add %r0, 1
		jlt %r0, 10, loop
		exit` + lockSubs)
	require.NoError(t, err)
	r, err := Verify(insns, cfg)
	require.NoError(t, err)
	assert.Equal(t, []CancelPoint{
		{Slot: 2, Locks: 0},                     // lock: nothing held yet
		{Slot: 3, Locks: 1, LockRegs: []int{6}}, // f runs with the lock held
		{Slot: 5, Locks: 1, LockRegs: []int{6}}, // so does unlock
	}, r.CallTable)
	loop, ok := r.HeldAt(10)
	require.True(t, ok, "the back-edge in f")
	assert.Equal(t, CancelPoint{Slot: 10}, loop, "f's frame holds nothing of its own")
	call, ok := r.HeldAt(3)
	require.True(t, ok)
	assert.Equal(t, 1, call.Locks)
	_, ok = r.HeldAt(4)
	assert.False(t, ok, "neither a cancellation point nor a call")
}
