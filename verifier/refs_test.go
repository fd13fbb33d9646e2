package verifier

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
)

// allocConfig has the allocation helpers (their abi numbers) and the lock
// subprograms.
func allocConfig() Config {
	cfg := testConfig
	cfg.Helpers = map[int32]Helper{7: {Name: "now"},
		abi.HelperAlloc: {Name: "alloc", Args: 1, Params: []Param{ParamNumber}, HeapOrNull: true},
		abi.HelperFree:  {Name: "free", Args: 1, Params: []Param{ParamNumber}}}
	cfg.LockFunc, cfg.UnlockFunc = "lock", "unlock"
	cfg.EntryArg = true // r3: a heap pointer to store to
	return cfg
}

// allocSrc expands ALLOC and FREE in src into calls to the helpers.
func allocSrc(src string) string {
	return strings.NewReplacer("ALLOC", fmt.Sprintf("mov %%r1, 16\ncall %d", abi.HelperAlloc),
		"FREE", fmt.Sprintf("call %d", abi.HelperFree)).Replace(src)
}

// TestAllocVerdicts: an allocation must be published (freed, stored out of
// the frame, returned by the main program) before every exit, never lost,
// and held alike where paths meet; each rejection names the rule.
func TestAllocVerdicts(t *testing.T) {
	for _, tc := range []struct{ name, src, reject string }{
		{"returned", "ALLOC\nexit", ""},
		{"freed", "ALLOC\nmov %r1, %r0\nFREE\nmov %r0, 0\nexit", ""},
		{"freed after its test", "ALLOC\njeq %r0, 0, +2\nmov %r1, %r0\nFREE\nmov %r0, 0\nexit", ""},
		{"NULL side holds nothing", "ALLOC\njne %r0, 0, +2\nmov %r0, 0\nexit\nmov %r1, %r0\nFREE\nmov %r0, 0\nexit", ""},
		{"stored in the heap", "mov %r6, %r3\nALLOC\nstxdw [%r6+0], %r0\nmov %r0, 0\nexit", ""},
		{"spilled and reloaded", "ALLOC\nstxdw [%r10-8], %r0\nmov %r0, 0\nldxdw %r1, [%r10-8]\nFREE\nmov %r0, 0\nexit", ""},
		{"the allocation or NULL", "mov %r6, 0\nldxdw %r0, [%r1+0]\njeq %r0, 0, +3\nALLOC\nmov %r6, %r0\nmov %r1, %r6\nFREE\nmov %r0, 0\nexit", ""},
		{"handed to a subprogram", "ALLOC\nmov %r1, %r0\ncall local f\nmov %r0, 0\nexit\nf:\nFREE\nmov %r0, 0\nexit", ""},
		{"kept across a lock", "mov %r9, %r3\nALLOC\nmov %r6, %r0\nmov %r1, %r9\ncall local lock\nmov %r1, %r9\ncall local unlock\nmov %r1, %r6\nFREE\nmov %r0, 0\nexit" + lockSubs, ""},

		{"exit with one", "ALLOC\nmov %r0, 0\nexit", "the allocation made at insn 1 is lost"},
		{"exit with a copy", "ALLOC\nmov %r6, %r0\nmov %r0, 0\nexit", "insn 4: exit with the allocation made at insn 1 unpublished"},
		{"overwritten", "ALLOC\nmov %r0, 1\nmov %r0, 0\nexit", "insn 3: the allocation made at insn 1 is lost"},
		{"clobbered by a call", "ALLOC\nmov %r1, %r0\ncall 7\nmov %r0, 0\nexit", "insn 4: the allocation made at insn 1 is lost"},
		{"spill overwritten", "ALLOC\nstxdw [%r10-8], %r0\nmov %r0, 0\nstw [%r10-4], 0\nmov %r0, 0\nexit", "insn 5: the allocation made at insn 1 is lost"},
		{"on one path", "mov %r6, 1\nldxdw %r0, [%r1+0]\njeq %r0, 0, +3\nALLOC\nmov %r6, %r0\nmov %r1, %r6\nFREE\nmov %r0, 0\nexit", "insn 6: paths meet here holding different unpublished allocations"},
		{"in different places", "ldxdw %r8, [%r1+0]\nALLOC\nmov %r6, %r0\nmov %r7, 0\nmov %r0, 0\njeq %r8, 0, +2\nmov %r7, %r6\nmov %r6, 0\nmov %r1, %r6\nFREE\nmov %r1, %r7\nFREE\nmov %r0, 0\nexit",
			"insn 9: paths meet here holding different unpublished allocations"},
		{"returned by a subprogram", "call local f\nexit\nf:\nALLOC\nexit", "insn 4: exit from a subprogram holding the allocation made at insn 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insns, err := bytecode.Assemble(allocSrc(tc.src))
			require.NoError(t, err, allocSrc(tc.src))
			_, err = Verify(insns, allocConfig())
			if tc.reject == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.reject)
		})
	}
}

// TestAllocTable: each cancellation point and call site lists the
// unpublished allocations of its frame, one place each (a callee-saved
// register first, then a stack slot, then the rest; at a call site only
// r6-r9 and the stack, and not what the call hands over).
func TestAllocTable(t *testing.T) {
	insns, err := bytecode.Assemble(allocSrc(`
		mov %r9, %r3
		ALLOC
		mov %r6, %r0
		stxdw [%r10-16], %r0
		call 7
		mov %r6, 0
		call 7
		mov %r1, %r9
		call local lock
		mov %r1, %r9
		call local unlock
		ldxdw %r1, [%r10-16]
		mov %r2, %r1
		call local f
		mov %r0, 0
		exit
	f:
		mov %r6, %r1
		call 7
		mov %r1, %r6
		FREE
		mov %r0, 0
		exit` + lockSubs))
	require.NoError(t, err)
	r, err := Verify(insns, allocConfig())
	require.NoError(t, err)
	at := func(pc int) []Alloc {
		cp, ok := r.HeldAt(pc)
		require.True(t, ok, "slot %d", pc)
		return cp.Allocs
	}
	assert.Nil(t, at(2), "the call that allocates: nothing yet")
	assert.Equal(t, []Alloc{{Site: 2, Reg: 6}}, at(5), "r6 first")
	assert.Equal(t, []Alloc{{Site: 2, Reg: OnStack, Off: -16}}, at(7), "r6 changed: the slot")
	assert.Equal(t, []Alloc{{Site: 2, Reg: OnStack, Off: -16}}, at(9), "kept across the lock call")
	assert.Equal(t, []Alloc{{Site: 2, Reg: OnStack, Off: -16}}, at(11), "and the unlock call")
	assert.Nil(t, at(14), "handed to f")
	assert.Equal(t, []Alloc{{Site: 2, Reg: 6}}, at(18), "f owns it, in r6")
	assert.Equal(t, []Alloc{{Site: 2, Reg: 6}}, at(20), "the free call: still held (r6 first)")
}
