package verifier

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/isatest"
	"github.com/kflex-go/kflex/internal/progen"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit/interp"
)

var testConfig = Config{CtxSize: 64, Helpers: map[int32]Helper{5: {Name: "echo", Args: 1}, 7: {Name: "now"}}}

func verify(t *testing.T, src string) (*Result, error) {
	t.Helper()
	insns, err := bytecode.Assemble(src)
	require.NoError(t, err, src)
	return Verify(insns, testConfig)
}

// TestVerdicts is the corpus of small programs with the expected verdict.
func TestVerdicts(t *testing.T) {
	cases := []struct {
		name, src, reject string // reject: "" to accept, else the reason's text
	}{
		{"minimal", "mov %r0, 0\nexit", ""},
		{"exit without r0", "exit", "insn 0: R0 !read_ok"},
		{"uninit register", "mov %r0, %r3\nexit", "insn 0: R3 !read_ok"},
		{"r2 is the context size", "mov %r0, %r2\nexit", ""},
		{"stack write then read", "stdw [%r10-8], 7\nldxdw %r0, [%r10-8]\nexit", ""},
		{"stack read of nothing", "ldxdw %r0, [%r10-8]\nexit", "insn 0: invalid read from stack off -8 size 8: not all bytes written"},
		{"partly written", "stw [%r10-8], 7\nldxdw %r0, [%r10-8]\nexit", "insn 1: invalid read from stack off -8 size 8"},
		{"below the frame", "stdw [%r10-520], 7\nmov %r0, 0\nexit", "insn 0: invalid stack access off=-520 size=8"},
		{"above the frame", "stb [%r10+0], 7\nmov %r0, 0\nexit", "insn 0: invalid stack access off=0 size=1"},
		{"stack pointer moved", "mov %r1, %r10\nadd %r1, -16\nstdw [%r1+8], 1\nldxdw %r0, [%r10-8]\nexit", ""},
		{"context in bounds", "ldxdw %r0, [%r1+56]\nexit", ""},
		{"context past its end", "ldxdw %r0, [%r1+60]\nexit", "insn 0: invalid context access off=60 size=8 (context is 64 bytes)"},
		{"context before it", "mov %r1, %r1\nsub %r1, 8\nldxdw %r0, [%r1+0]\nexit", "insn 2: invalid context access off=-8 size=8"},
		{"heap access never rejected", "lddw %r3, 0x123456789\nldxdw %r0, [%r3+100]\nstdw [%r3-32768], 1\nexit", ""},
		{"unknown helper", "call 99\nexit", "insn 0: call to unknown helper 99"},
		{"helper argument unset", "call 7\ncall 5\nexit", "insn 1: helper echo reads R1, which is not set"},
		{"helper clobbers r1-r5", "mov %r1, 1\ncall 5\nmov %r0, %r1\nexit", "insn 2: R1 !read_ok"},
		{"helper keeps r6", "mov %r6, 1\nmov %r1, 1\ncall 5\nmov %r0, %r6\nexit", ""},
		{"loop", "mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 100, loop\nexit", ""},
		{"loop moving a pointer", "mov %r0, 0\nmov %r6, %r10\nloop:\nadd %r6, -8\nstdw [%r6+0], 1\nadd %r0, 1\njlt %r0, 4, loop\nexit",
			"dereferenced: a pointer of different kinds or offsets"},
		{"one path leaves r0 unset", "ldxdw %r3, [%r1+0]\njeq %r3, 0, +1\nmov %r0, 1\nexit", "insn 3: R0 !read_ok"},
		{"a path no value takes", "jeq %r2, 0, +1\nmov %r0, 1\nexit", ""},
		{"refined by jeq", "ldxdw %r3, [%r1+0]\njeq %r3, 8, +2\nmov %r0, 0\nexit\nmov %r2, %r10\nadd %r2, %r3\nstdw [%r2-16], 1\nmov %r0, 0\nexit", ""},
		// Paths the analysis once thought no value takes, so it never
		// checked the write above the frame on them: a sign-extending load
		// read as zero-extending, a 64-bit byte swap as a 32-bit one.
		{"sign-extended load", "ldxbsx %r5, [%r1+0]\njgt %r5, 255, +2\nmov %r0, 0\nexit\nstb [%r10+0], 7\nmov %r0, 0\nexit",
			"insn 4: invalid stack access off=0 size=1"},
		{"64-bit byte swap", "lddw %r5, 1\nbe64 %r5\njne %r5, 0, +2\nmov %r0, 0\nexit\nstb [%r10+0], 7\nmov %r0, 0\nexit",
			"insn 6: invalid stack access off=0 size=1"},
		{"movsx", "mov %r0, 0\nmov %r5, 0x80\nmovsx864 %r5, %r5\njsgt %r5, -1, +1\nstb [%r10+0], 7\nexit",
			"insn 4: invalid stack access off=0 size=1"},
		// callx: the analysis must know which helpers it may call.
		{"callx of a known helper", "mov %r1, 1\nmov %r2, 5\ncall %r2\nexit", ""},
		{"callx of one of two", "ldxdw %r3, [%r1+0]\nmov %r2, 5\njeq %r3, 0, +1\nmov %r2, 7\nmov %r1, 1\ncall %r2\nexit", ""},
		{"callx by the low half", "lddw %r2, 0x100000005\nmov %r1, 1\ncall %r2\nexit", ""},
		{"callx of any number", "ldxdw %r2, [%r1+0]\ncall %r2\nexit", "insn 1: callx r2: the helper is only known at run time"},
		{"callx of no helper", "mov %r2, 6\ncall %r2\nexit", "insn 1: call to unknown helper 6"},
		{"callx of one helper and one not", "ldxdw %r3, [%r1+0]\nmov %r2, 5\njeq %r3, 0, +1\nmov %r2, 6\nmov %r1, 1\ncall %r2\nexit",
			"insn 5: call to unknown helper 6"},
		{"callx of a pointer", "mov %r2, %r10\ncall %r2\nexit", "insn 1: callx r2 holds a fp pointer"},
		{"subprogram", "mov %r1, 2\ncall local f\nexit\nf:\nmov %r0, %r1\nadd %r0, 1\nexit", ""},
		{"subprogram's r6 unset", "mov %r6, 2\ncall local f\nexit\nf:\nmov %r0, %r6\nexit", "insn 3: R6 !read_ok"},
		{"return a pointer", "mov %r0, %r10\nexit", "insn 1: exit with a fp pointer in R0"},
		{"atomic on unwritten stack", "mov %r1, 1\nlock add [%r10-8], %r1\nmov %r0, 0\nexit", "insn 1: atomic operation on stack off -8 size 8"},
		{"atomic fetch", "stdw [%r10-8], 1\nmov %r1, 1\nlock fetch add [%r10-8], %r1\nmov %r0, %r1\nexit", ""},
		{"cmpxchg needs r0", "stdw [%r10-8], 1\nmov %r1, 1\nlock cmpxchg [%r10-8], %r1\nmov %r0, 0\nexit", "insn 2: R0 !read_ok"},
		{"unreachable", "mov %r0, 0\nexit\nmov %r0, 1\nexit", "insn 2: unreachable instruction"},
		// Every instruction reached must be able to reach an exit of its
		// frame; a loop with a way out stays accepted (the runtime cancels
		// one that never takes it).
		{"endless loop", "mov %r0, 0\nloop:\nadd %r0, 1\nja loop", "insn 0: no exit is reachable from here (an endless loop)"},
		{"a branch into an endless loop", "ldxdw %r3, [%r1+0]\njeq %r3, 0, +2\nmov %r0, 0\nexit\nja -1",
			"insn 4: no exit is reachable from here"},
		{"an endless loop in a subprogram", "mov %r1, 1\ncall local f\nexit\nf:\nadd %r1, 1\nja f",
			"insn 3: no exit is reachable from here"},
		{"a way out never taken", "mov %r0, 0\nloop:\njeq %r0, 1, +1\nja loop\nexit", ""},
		{"a loop left by may_goto", "mov %r0, 0\nloop:\nmay_goto +1\nja loop\nexit", ""},
		{"an endless loop no path reaches", "mov %r0, 0\njeq %r0, 0, +1\nja -1\nexit", ""},
		// Recursion is refused before any analysis, naming the call that
		// closes the cycle.
		{"direct recursion", "mov %r1, 0\ncall local f\nexit\nf:\nadd %r1, 1\ncall local f\nexit",
			"insn 4: call chain main → f → f is recursive"},
		{"mutual recursion", "call local f\nexit\nf:\ncall local g\nexit\ng:\ncall local f\nexit",
			"insn 4: call chain main → f → g → f is recursive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := verify(t, tc.src)
			if tc.reject == "" {
				require.NoError(t, err)
				assert.NotZero(t, r.InsnsProcessed)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.reject)
			assert.ErrorIs(t, err, ErrRejected)
			var e *Error
			require.True(t, errors.As(err, &e))
		})
	}
}

// callChain is a program of n frames: main calls f1, which calls f2, up to
// f(n-1), which returns 0.
func callChain(n int) string {
	var b strings.Builder
	b.WriteString("call local f1\nexit\n")
	for k := 1; k < n-1; k++ {
		fmt.Fprintf(&b, "f%d:\ncall local f%d\nexit\n", k, k+1)
	}
	fmt.Fprintf(&b, "f%d:\nmov %%r0, 0\nexit", n-1)
	return b.String()
}

// TestCallDepth: a call chain of abi.MaxFrames frames is accepted, one
// more is rejected at the call that enters the ninth frame, however the
// chain is reached.
func TestCallDepth(t *testing.T) {
	expectVerdicts(t, testConfig, []verdict{
		{callChain(abi.MaxFrames), ""},
		{callChain(abi.MaxFrames + 1), "insn 14: call depth 9 exceeds 8 frames: main → f1 → f2 → f3 → f4 → f5 → f6 → f7 → f8"},
		// f1's chain (seven frames) walked first from main, then again
		// through x: one frame more.
		{"call local f1\ncall local x\nexit\nx:\ncall local f1\nexit\n" + strings.TrimPrefix(callChain(8), "call local f1\nexit\n"),
			"insn 15: call depth 9 exceeds 8 frames: main → x → f1 → f2 → f3 → f4 → f5 → f6 → f7"},
	})
}

func TestGuardCounts(t *testing.T) {
	r, err := verify(t, `
		stdw [%r10-8], 1
		ldxdw %r3, [%r1+0]
		ldxdw %r0, [%r3+0]
		ldxdw %r0, [%r10-8]
		exit`)
	require.NoError(t, err)
	assert.Equal(t, 4, r.GuardsTotal)
	assert.Equal(t, 3, r.GuardsElided, "stack, stack, context; the heap load keeps its guard")
	assert.Equal(t, []Access{StackAccess, CtxAccess, HeapAccess, StackAccess, NoAccess}, r.Access,
		"nothing uses the sanitized pointer later: a plain guard")
}

// TestCheckedPointers: the first access through a heap pointer sanitizes it in
// place; later ones, within reach of the guard regions, need no guard, until
// the register is written with something else.
func TestCheckedPointers(t *testing.T) {
	r, err := verify(t, `
		ldxdw %r3, [%r1+0]
		ldxdw %r0, [%r3+0]
		ldxdw %r0, [%r3+8]
		add %r3, 16
		ldxdw %r0, [%r3+0]
		add %r3, 40000
		ldxdw %r0, [%r3+0]
		ldxdw %r3, [%r3+0]
		ldxdw %r0, [%r3+0]
		exit`)
	require.NoError(t, err)
	assert.Equal(t, []Access{CtxAccess, HeapSanitize, HeapChecked, NoAccess, HeapChecked, NoAccess, HeapSanitize,
		HeapChecked, HeapAccess, NoAccess}, r.Access)
	assert.Equal(t, 7, r.GuardsTotal)
	assert.Equal(t, 3+1, r.GuardsElided)
	// A loop: the pointer is checked on the way round too.
	r, err = verify(t, `
		ldxdw %r3, [%r1+0]
		mov %r0, 0
	loop:
		ldxdw %r4, [%r3+0]
		ldxdw %r5, [%r3+8]
		add %r0, 1
		jlt %r0, 8, loop
		exit`)
	require.NoError(t, err)
	assert.Equal(t, HeapSanitize, r.Access[2])
	assert.Equal(t, HeapChecked, r.Access[3])
}

// TestCheckedRanges: a checked pointer plus a bounded index (a masked
// number shifted into place) is checked over the index's range, however the
// sum is written; an unbounded index, or a range past the guard regions'
// reach, makes a number the next access sanitizes.
func TestCheckedRanges(t *testing.T) {
	r, err := verify(t, `
		ldxdw %r3, [%r1+0]
		ldxdw %r0, [%r3+0]
		ldxdw %r5, [%r1+8]
		and %r5, 1023
		lsh %r5, 4
		mov %r4, %r5
		add %r4, %r3
		ldxdw %r0, [%r4+8]
		mov %r4, %r3
		add %r4, %r5
		ldxdw %r0, [%r4+16376]
		mov %r4, %r3
		sub %r4, %r5
		ldxdw %r0, [%r4-8]
		mov %r4, %r3
		add %r4, %r5
		ldxdw %r0, [%r4+16400]
		ldxdw %r5, [%r1+8]
		mov %r4, %r3
		add %r4, %r5
		ldxdw %r0, [%r4+0]
		exit`)
	require.NoError(t, err)
	assert.Equal(t, []Access{CtxAccess, HeapSanitize, CtxAccess, NoAccess, NoAccess, NoAccess, NoAccess, HeapChecked,
		NoAccess, NoAccess, HeapChecked, NoAccess, NoAccess, HeapChecked,
		NoAccess, NoAccess, HeapAccess, CtxAccess, NoAccess, NoAccess, HeapAccess, NoAccess}, r.Access)

	// Round a loop: a constant offset on the way in, the index's range on
	// the way round; the join covers both. Two sanitizers meeting at a join
	// are both kept.
	r, err = verify(t, `
		ldxdw %r6, [%r1+0]
		ldxdw %r0, [%r6+0]
		mov %r8, 3
	level:
		mov %r4, %r8
		lsh %r4, 3
		add %r4, %r6
		ldxdw %r0, [%r4+16]
		jeq %r8, 0, out
		sub %r8, 1
		jeq %r0, 0, level
		ldxdw %r7, [%r0+0]
		mov %r6, %r0
		ja level
	out:
		exit`)
	require.NoError(t, err)
	assert.Equal(t, HeapSanitize, r.Access[1], "the first pointer's sanitizer")
	assert.Equal(t, HeapChecked, r.Access[6], "indexed from either pointer")
	assert.Equal(t, HeapSanitize, r.Access[10], "the second pointer's sanitizer, kept though its result is used past a join")
}

// TestEntryArg: the engine's pointer argument in r3 is checked from the start;
// without the convention r3 is not set.
func TestEntryArg(t *testing.T) {
	insns, err := bytecode.Assemble("ldxdw %r0, [%r3+8]\nexit")
	require.NoError(t, err)
	cfg := testConfig
	cfg.EntryArg = true
	r, err := Verify(insns, cfg)
	require.NoError(t, err)
	assert.Equal(t, HeapChecked, r.Access[0])
	_, err = Verify(insns, testConfig)
	require.ErrorContains(t, err, "R3 !read_ok")
	cfg.CtxSize = 4
	_, err = Verify(insns, cfg)
	require.ErrorContains(t, err, "R3 !read_ok", "no word in the context, no argument")
}

// heapAccesses are the Access of r's memory instructions that reach the heap,
// in order.
func heapAccesses(r *Result) []Access {
	var out []Access
	for _, a := range r.Access {
		if a != NoAccess && a != CtxAccess && a != StackAccess {
			out = append(out, a)
		}
	}
	return out
}

// TestHeapOrNull: a helper's heap-or-NULL result (or a cast into the engine's
// view) needs no guard past a test
// against 0, and a guard before it, or when the test came after moving it.
func TestHeapOrNull(t *testing.T) {
	cfg := testConfig
	cfg.Helpers = map[int32]Helper{1: {Name: "alloc", Args: 1, HeapOrNull: true}}
	for _, tc := range []struct {
		src  string
		want Access
	}{
		{"mov %r1, 16\ncall 1\njeq %r0, 0, +1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapChecked},
		{"mov %r1, 16\ncall 1\njne %r0, 0, +1\nja +1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapChecked},
		{"mov %r1, 16\ncall 1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapAccess},
		{"mov %r1, 16\ncall 1\nadd %r0, 8\njeq %r0, 0, +1\nstdw [%r0+0], 1\nmov %r0, 0\nexit", HeapAccess},
		// addr_space_cast into the engine's view masks like a guard and keeps NULL.
		{"ldxdw %r0, [%r1+0]\naddr_space_cast %r0, %r0, 1\njeq %r0, 0, +1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapChecked},
		{"ldxdw %r0, [%r1+0]\naddr_space_cast %r0, %r0, 1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapAccess},
		{"lddw %r0, 0x10000\naddr_space_cast %r0, %r0, 1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapChecked},
		{"ldxdw %r0, [%r1+0]\nor %r0, 1\naddr_space_cast %r0, %r0, 1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapChecked},
		{"lddw %r0, 0\naddr_space_cast %r0, %r0, 1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapAccess},
		{"ldxdw %r0, [%r1+0]\naddr_space_cast %r0, %r0, 65536\njeq %r0, 0, +1\nstdw [%r0+8], 1\nmov %r0, 0\nexit", HeapAccess},
	} {
		insns, err := bytecode.Assemble(tc.src)
		require.NoError(t, err)
		r, err := Verify(insns, cfg)
		require.NoError(t, err, tc.src)
		assert.Equal(t, []Access{tc.want}, heapAccesses(r), tc.src)
	}
}

// TestLocksHeld: locks taken through the lock subprogram are released on every
// path before exit, never released twice, held alike where paths meet; the
// cancellation table says how many are held at each cancellation point.
func TestLocksHeld(t *testing.T) {
	cfg := testConfig
	cfg.LockFunc, cfg.UnlockFunc = "lock", "unlock"
	subs := func(body string) string { // the subprograms body calls
		s := "\nlock:\nmov %r0, 0\nexit"
		if strings.Contains(body, "local unlock") {
			s += "\nunlock:\nmov %r0, 0\nexit"
		}
		return s
	}
	for _, tc := range []struct{ name, body, reject string }{
		{"balanced", "mov %r6, %r1\nmov %r1, %r6\ncall local lock\ncall 7\nmov %r1, %r6\ncall local unlock\nmov %r0, 0\nexit", ""},
		{"held across a helper call, its address kept nowhere", "call local lock\ncall 7\ncall local unlock\nmov %r0, 0\nexit",
			"insn 1: a cancellation point with lock 1 of 1 held, and no callee-saved register (r6-r9) keeps its address"},
		{"nested", "call local lock\ncall local lock\ncall local unlock\ncall local unlock\nmov %r0, 0\nexit", ""},
		{"held at exit", "call local lock\nmov %r0, 0\nexit", "insn 2: exit with 1 lock(s) held, the last taken at insn 0 (a lock is taken and released in the same function"},
		{"released twice", "call local lock\ncall local unlock\ncall local unlock\nmov %r0, 0\nexit", "insn 2: unlock without a lock held"},
		{"taken in a subprogram, released by its caller", "call local take\ncall local unlock\nmov %r0, 0\nexit\ntake:\ncall local lock\nmov %r0, 0\nexit",
			"insn 1: unlock without a lock held (a lock is taken and released in the same function, which returns holding none)"},
		{"on one path only", "ldxdw %r6, [%r1+0]\njeq %r6, 0, +1\ncall local lock\nmov %r0, 0\nexit",
			"insn 3: paths meet here holding different numbers of locks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insns, err := bytecode.Assemble(tc.body + subs(tc.body))
			require.NoError(t, err)
			r, err := Verify(insns, cfg)
			if tc.reject != "" {
				require.ErrorContains(t, err, tc.reject)
				return
			}
			require.NoError(t, err)
			if tc.name == "balanced" {
				assert.Equal(t, []CancelPoint{{Slot: 3, Locks: 1, LockRegs: []int{6}}}, r.CancelTable,
					"the helper call runs holding the lock, whose address r6 keeps")
			}
		})
	}
	// Without the configuration, the calls are plain subprograms.
	insns, err := bytecode.Assemble("call local lock\nmov %r0, 0\nexit" + subs(""))
	require.NoError(t, err)
	_, err = Verify(insns, testConfig)
	require.NoError(t, err)
}

// TestCancelTableRegisters: the cancellation table names the callee-saved
// register that keeps each held lock's address (the one r1 was copied from
// for the lock call), while neither changes; where none is known to at a
// cancellation point, the program is rejected (a cancellation there could not
// release the lock).
func TestCancelTableRegisters(t *testing.T) {
	cfg := testConfig
	cfg.LockFunc, cfg.UnlockFunc = "lock", "unlock"
	const subs = "\nlock:\nmov %r0, 0\nexit\nunlock:\nmov %r0, 0\nexit"
	const lock6 = "ldxdw %r6, [%r1+0]\nmov %r1, %r6\ncall local lock\n"
	const lock7 = "ldxdw %r7, [%r9+8]\nmov %r1, %r7\ncall local lock\n"
	for _, tc := range []struct {
		name, body string
		want       [][]int // LockRegs at each cancellation point, in order
	}{
		{"kept in r6", lock6 + "call 7\nmov %r1, %r6\ncall local unlock\nmov %r0, 0\nexit", [][]int{{6}}},
		{"a copy of a copy", "ldxdw %r8, [%r1+0]\nmov %r2, %r8\nmov %r1, %r2\ncall local lock\ncall 7\nmov %r1, %r8\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{8}}},
		{"kept nowhere", "ldxdw %r1, [%r1+0]\ncall local lock\ncall 7\ncall local unlock\nmov %r0, 0\nexit", [][]int{{0}}},
		{"r6 sanitized in place by an access (the same lock)", lock6 + "ldxdw %r0, [%r6+8]\ncall 7\nstxdw [%r6+16], %r0\ncall 7\nmov %r1, %r6\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{6}, {6}}},
		{"r6 changed while held", lock6 + "add %r6, 8\ncall 7\nsub %r6, 8\nmov %r1, %r6\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{0}}},
		{"r6 changed before the call", "ldxdw %r6, [%r1+0]\nmov %r1, %r6\nmov %r6, 0\ncall local lock\ncall 7\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{0}}},
		{"two locks, the first released first", "mov %r9, %r1\n" + lock6 + lock7 + "call 7\nmov %r1, %r6\ncall local unlock\ncall 7\nmov %r1, %r7\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{6, 7}, {7}}},
		{"released through an unknown register", "mov %r9, %r1\n" + lock6 + lock7 + "ldxdw %r1, [%r9+0]\ncall local unlock\ncall 7\nmov %r1, %r7\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{0}}},
		{"different registers on two paths", "mov %r9, %r1\nldxdw %r6, [%r9+0]\nldxdw %r7, [%r9+8]\nmov %r1, %r6\njeq %r6, 0, +1\nmov %r1, %r7\ncall local lock\ncall 7\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{0}}},
		{"the same register on two paths", "mov %r9, %r1\nldxdw %r6, [%r9+0]\nmov %r1, %r6\njeq %r6, 0, +1\nmov %r1, %r6\ncall local lock\ncall 7\nmov %r1, %r6\ncall local unlock\nmov %r0, 0\nexit",
			[][]int{{6}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			insns, err := bytecode.Assemble(tc.body + subs)
			require.NoError(t, err)
			r, err := Verify(insns, cfg)
			if slices.ContainsFunc(tc.want, func(regs []int) bool { return slices.Contains(regs, 0) }) {
				require.ErrorContains(t, err, "no callee-saved register (r6-r9) keeps its address")
				require.ErrorContains(t, err, "in C: a local pointer variable passed to kflex_lock and kflex_unlock; a global lock through kflex_keep(&lock)",
					"what a C programmer does about it")
				return
			}
			require.NoError(t, err)
			var got [][]int
			for _, cp := range r.CancelTable {
				if cp.Locks > 0 {
					got = append(got, cp.LockRegs)
				}
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// forgedSpills are programs that store a value on the stack, overwrite it
// through a heap alias of the frame (frames live in the sandbox, and another
// process may write there too) and use what they read back: as a pointer, as a
// stack offset, as a checked heap pointer. The verifier must not take the
// reloaded value for what was stored: the last access of each stays guarded,
// or the program is rejected.
var forgedSpills = map[string]string{
	"stack pointer": `
		stdw [%r10-16], 0
		mov %r2, %r10
		add %r2, -16
		stxdw [%r10-8], %r2
	` + forgeSlot + `
		ldxdw %r2, [%r10-8]
		ldxdw %r0, [%r2+0]
		exit`,
	"stack offset": `
		stdw [%r10-16], 0
		stdw [%r10-8], -16
	` + forgeSlot + `
		ldxdw %r2, [%r10-8]
		mov %r3, %r10
		add %r3, %r2
		ldxdw %r0, [%r3+0]
		exit`,
	"checked heap pointer": `
		ldxdw %r2, [%r1+0]
		ldxdw %r0, [%r2+0]
		stxdw [%r10-8], %r2
	` + forgeSlot + `
		ldxdw %r2, [%r10-8]
		ldxdw %r0, [%r2+0]
		exit`,
}

// forgeSlot overwrites the slot at r10-8 with FORGED (patched in) through r4,
// the frame top taken as a number.
const forgeSlot = `
		mov %r4, %r10
		and %r4, -1
		lddw %r5, FORGED
		stxdw [%r4-8], %r5`

func TestForgedSpills(t *testing.T) {
	for name, src := range forgedSpills {
		t.Run(name, func(t *testing.T) {
			r, err := verify(t, strings.ReplaceAll(src, "FORGED", "0x1000"))
			if err != nil {
				assert.ErrorIs(t, err, ErrRejected)
				return
			}
			last := len(r.Access) - 2 // the access before exit
			assert.Equal(t, HeapAccess, r.Access[last], "the reloaded value's access is guarded")
		})
	}
}

// TestRejectionLog: a rejection's log is the path to it, each instruction
// written as Linux's verifier writes it (bytecode.KernelText), with the
// registers before it.
func TestRejectionLog(t *testing.T) {
	_, err := verify(t, "mov %r6, %r10\nadd %r6, -8\nldxdw %r0, [%r6-8]\nexit")
	var e *Error
	require.True(t, errors.As(err, &e))
	assert.Equal(t, 2, e.Insn)
	require.Len(t, e.Log, 3, "the path from the entry")
	assert.True(t, strings.HasPrefix(e.Log[0], "0: (bf) r6 = r10 ; "), e.Log[0])
	assert.Contains(t, e.Log[1], "R6=fp+0")
	assert.True(t, strings.HasPrefix(e.Log[2], "2: (79) r0 = *(u64 *)(r6 -8) ; "), e.Log[2])
	assert.Contains(t, e.Log[2], "R6=fp-8")
	assert.Contains(t, e.Log[2], "R10=fp+0")
	// Round a loop, the path is the one that first got there; an lddw
	// takes two slots.
	_, err = verify(t, "lddw %r7, 0x100000000\nmov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 4, loop\nldxdw %r0, [%r10-8]\nexit")
	require.True(t, errors.As(err, &e))
	assert.Equal(t, 5, e.Insn)
	require.Len(t, e.Log, 5)
	assert.True(t, strings.HasPrefix(e.Log[0], "0: (18) r7 = 0x100000000"), e.Log[0])
	assert.True(t, strings.HasPrefix(e.Log[1], "2: (b7) r0 = 0"), e.Log[1])
	assert.True(t, strings.HasPrefix(e.Log[4], "5: (79) r0 = *(u64 *)(r10 -8)"), e.Log[4])
}

// TestISACorpus: the ISA files the verifier accepts run on the interpreter
// without a stack or context access going out of bounds, and the error files
// that fault on purpose are rejected.
func TestISACorpus(t *testing.T) {
	cases, err := isatest.Load("../testdata/isa")
	require.NoError(t, err)
	accepted := 0
	for _, c := range cases {
		insns, err := c.Instructions()
		require.NoError(t, err)
		_, verr := Verify(insns, Config{CtxSize: len(c.Mem), Helpers: testConfig.Helpers})
		if c.Name == "oob-stack" {
			assert.ErrorContains(t, verr, "invalid stack access", c.Name)
		}
		if verr == nil {
			accepted++
		}
	}
	t.Logf("%d of %d ISA files verify", accepted, len(cases))
	assert.Greater(t, accepted, len(cases)/2)
}

// soundness runs an accepted program on the interpreter, without a heap: a
// memory fault at an instruction the verifier called a stack or context
// access is a verifier bug. In builds with -tags kflextrace (make test runs
// this package so too) so is an instruction run that the analysis never
// reached, or a number in a register outside what the analysis says it holds
// there (its tnum and intervals).
func soundness(t *testing.T, data []byte) (accepted bool) {
	src := progen.NewSource(data)
	ctx := progen.Context(src)
	insns := progen.GenerateWith(src, 48, progen.Options{Calls: true})
	if len(data) > 0 && data[0]&1 == 1 { // sometimes: raw bytes as the program
		if raw, err := bytecode.Decode(data[:len(data)&^7]); err == nil {
			insns = raw
		}
	}
	cfg := Config{CtxSize: len(ctx), Helpers: testConfig.Helpers}.withDefaults()
	prog, err := bytecode.NewProgram(insns)
	if err != nil {
		return false
	}
	g, err := buildCFG(prog)
	if err != nil {
		return false
	}
	n := newAnalysis(prog, g, cfg)
	r, err := n.run()
	if err != nil {
		return false
	}
	// The same analysis keeping every state, for the register oracle; the
	// result above (join points only) must have reached every slot it does.
	a := newAnalysis(prog, g, cfg)
	a.keepAll = true
	if _, err := a.run(); err != nil {
		t.Fatalf("accepted keeping join states, rejected keeping all: %v\n%v", err, insns)
	}
	p, err := interp.Prepare(prog)
	if err != nil {
		return true // the interpreter has its own limits (lddw pseudo sources)
	}
	m := interp.NewMachine()
	m.MaxInsns, m.MayGoto = 200000, 100
	m.Helpers = isatest.Helpers()
	traceRegisters(m, func(slot int, regs *[11]uint64) {
		s := a.in[slot]
		if s == nil || !n.reached[slot] {
			t.Fatalf("slot %d ran, but the analysis never reached it\n%v", slot, insns)
		}
		for i, reg := range s.Regs {
			if reg.Kind == Scalar && !member(reg, regs[i]) {
				t.Fatalf("slot %d: R%d = %#x, but the analysis says %v\n%v", slot, i, regs[i], reg, insns)
			}
		}
	})
	_, err = m.Run(p, bytes.Clone(ctx))
	var re *interp.RuntimeError
	if errors.As(err, &re) && errors.Is(err, interp.ErrOutOfBounds) {
		if acc := r.Access[re.Insn]; acc == StackAccess || acc == CtxAccess {
			t.Fatalf("verified %v access faulted: %v\n%v", acc, err, insns)
		}
	}
	return true
}

func TestSoundnessGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	accepted := 0
	for range 2000 {
		data := testutil.RandomBytes(rng, 400)
		data[0] &^= 1
		if soundness(t, data) {
			accepted++
		}
	}
	t.Logf("%d of 2000 generated programs verified and ran (registers checked against the analysis: %v)", accepted, registerOracle)
	assert.Greater(t, accepted, 1000, "the oracle must see accepted programs")
}

func FuzzVerifier(f *testing.F) {
	f.Add([]byte{0})
	f.Add(bytes.Repeat([]byte{0x17, 0x92, 0x01}, 100))
	f.Fuzz(func(t *testing.T, data []byte) { soundness(t, data) })
}

// verdict is a program and the reason it is rejected for ("": accepted).
type verdict struct{ src, reject string }

// expectVerdicts verifies each program for cfg and checks its verdict.
func expectVerdicts(t *testing.T, cfg Config, cases []verdict) {
	t.Helper()
	for _, tc := range cases {
		insns, err := bytecode.Assemble(tc.src)
		require.NoError(t, err, tc.src)
		_, err = Verify(insns, cfg)
		if tc.reject == "" {
			assert.NoError(t, err, tc.src)
		} else {
			assert.ErrorContains(t, err, tc.reject, tc.src)
		}
	}
}

// TestHelperParams: a helper's prototype refuses the engine's pointers where
// it takes a number, and a number that may be 0 where it takes one proven
// not to be; a test against 0 proves it.
func TestHelperParams(t *testing.T) {
	cfg := testConfig
	cfg.Helpers = map[int32]Helper{
		1: {Name: "alloc", Args: 1, Params: []Param{ParamNumber}, HeapOrNull: true},
		2: {Name: "use", Args: 2, Params: []Param{ParamNonNull}},
	}
	expectVerdicts(t, cfg, []verdict{
		{"mov %r1, 16\ncall 1\nexit", ""},
		{"call 1\nexit", "insn 0: helper alloc: R1 is a ctx pointer; it takes a number"},
		{"mov %r1, %r10\ncall 1\nexit", "insn 1: helper alloc: R1 is a fp pointer; it takes a number"},
		{"ldxdw %r1, [%r1+0]\nmov %r2, %r10\ncall 2\nexit", "insn 2: helper use: R1 may be 0"},
		{"ldxdw %r1, [%r1+0]\nmov %r0, 0\njeq %r1, 0, +2\nmov %r2, %r10\ncall 2\nexit", ""}, // r2 is ParamAny
		{"mov %r1, 16\ncall 1\nmov %r1, %r0\njeq %r1, 0, +1\ncall 2\nexit", "insn 4: helper use reads R2"},
		{"mov %r1, 16\ncall 1\nmov %r1, %r0\nmov %r2, 0\ncall 2\nexit", "insn 4: helper use: R1 may be 0"},
		{"mov %r1, 16\ncall 1\nmov %r1, %r0\nmov %r2, 0\njeq %r1, 0, +1\ncall 2\nexit", ""},
	})
}

// TestCtxFields: with a layout, every context access is one whole field, and
// stores (atomics too) go only to writable fields.
func TestCtxFields(t *testing.T) {
	cfg := testConfig
	cfg.CtxSize = 16
	cfg.CtxFields = []CtxField{{Name: "arg", Off: 0, Size: 8}, {Name: "flags", Off: 8, Size: 4, Writable: true}}
	expectVerdicts(t, cfg, []verdict{
		{"ldxdw %r0, [%r1+0]\nldxw %r2, [%r1+8]\nstw [%r1+8], 1\nexit", ""},
		{"ldxw %r0, [%r1+0]\nexit", "insn 0: invalid context access off=0 size=4: not a whole field"},
		{"ldxw %r0, [%r1+12]\nexit", "insn 0: invalid context access off=12 size=4: not a whole field"},
		{"stdw [%r1+0], 1\nmov %r0, 0\nexit", "insn 0: write to context field arg (off=0), which is read-only"},
		{"mov %r2, 1\nlock add [%r1+0], %r2\nmov %r0, 0\nexit", "insn 1: write to context field arg"},
		{"mov %r2, 1\nlock add32 [%r1+8], %r2\nmov %r0, 0\nexit", ""},
	})
}

// TestLimits: a program past the size limit, or one whose analysis would
// keep more states or process more instructions than allowed, is rejected
// with the limit named, before it costs more memory or time.
func TestLimits(t *testing.T) {
	p := bigProgram(1000) // a join point every four instructions
	r, err := Verify(p, testConfig)
	require.NoError(t, err)
	require.Greater(t, r.States, 200)
	assert.Less(t, r.States, 400, "states are kept at join points only")
	assert.GreaterOrEqual(t, r.PeakStates, r.States)

	for _, tc := range []struct {
		cfg    func(*Config)
		reason string
	}{
		{func(c *Config) { c.MaxSlots = 999 }, "insn 999: program too large: 1000 instructions (at most 999)"},
		{func(c *Config) { c.MaxStates = 100 }, "program too complex: more than 100 states"},
		{func(c *Config) { c.MaxInsns = 500 }, "program too complex: 501 instructions processed"},
	} {
		cfg := testConfig
		tc.cfg(&cfg)
		_, err := Verify(p, cfg)
		assert.ErrorContains(t, err, tc.reason)
		assert.ErrorIs(t, err, ErrRejected)
	}
}
