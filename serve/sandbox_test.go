package serve_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/verifier"
)

// The sandbox oracle: programs that play games with pointers (spill them,
// forge slots through a heap alias of the frame, reload, move, load the
// addresses of memory outside the sandbox) are verified, compiled with the
// verifier's placement of guards and run. Whatever they do, they must neither
// write the canary words outside the sandbox nor read them: afterwards the
// canary is intact, and no canary value is in r0 or anywhere in the sandbox.

const canaryWords = 4

func canaryValue(i int) uint64 { return 0xc0ffee00_00000000 | uint64(i) }

// pointerGame turns data into a program, three bytes per instruction: an
// operation, a register and an operand. r1 stays the context, whose first word
// is the canary's address: the pointer argument, which the engine passes in r3
// masked into the sandbox, and r6 as it is. r8 is the frame top as a number,
// r9 the canary's address too.
func pointerGame(data []byte, canary uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
	ldxdw %%r6, [%%r1+0]
	mov %%r7, %%r10
	add %%r7, -32
	mov %%r8, %%r10
	and %%r8, -1
	lddw %%r9, %#x
	mov %%r0, %%r6
	mov %%r2, %%r3
	mov %%r4, %%r6
	mov %%r5, %%r3
`, canary)
	for k := 1; k <= 8; k++ {
		fmt.Fprintf(&b, "\tstdw [%%r10-%d], 0\n", 8*k)
	}
	b.WriteString("\tstxdw [%r10-64], %r1\n") // the context, for after calls
	dsts := []int{0, 2, 3, 4, 5, 6, 7}
	bases := []int{0, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	offs := []int{-16, -8, 0, 8, 16, 24}
	calls := false
	for len(data) >= 3 && b.Len() < 4096 {
		op, x, y := data[0]%16, int(data[1]), int(data[2])
		data = data[3:]
		a, r := dsts[x%len(dsts)], bases[(x/len(dsts))%len(bases)]
		slot, off := 8*(1+y%2), offs[y%len(offs)] // two slots: spills and forgeries meet
		switch op {
		case 0: // spill
			fmt.Fprintf(&b, "\tstxdw [%%r10-%d], %%r%d\n", slot, a)
		case 1: // reload
			fmt.Fprintf(&b, "\tldxdw %%r%d, [%%r10-%d]\n", a, slot)
		case 2: // overwrite a slot through the frame's heap alias
			fmt.Fprintf(&b, "\tstxdw [%%r8-%d], %%r%d\n", slot, a)
		case 3:
			fmt.Fprintf(&b, "\tldxdw %%r%d, [%%r%d%+d]\n", a, r, off)
		case 4:
			fmt.Fprintf(&b, "\tstxdw [%%r%d%+d], %%r%d\n", r, off, a)
		case 5:
			fmt.Fprintf(&b, "\tadd %%r%d, %d\n", a, off)
		case 6: // a copy, or a cast into the engine's view or the canonical one
			switch y % 4 {
			case 2:
				fmt.Fprintf(&b, "\taddr_space_cast %%r%d, %%r%d, 65536\n", a, r)
			case 3: // NULL stays NULL: sometimes cast one
				if y%8 == 7 {
					fmt.Fprintf(&b, "\tmov %%r%d, 0\n", r)
				}
				fmt.Fprintf(&b, "\taddr_space_cast %%r%d, %%r%d, 1\n", a, r)
			default:
				fmt.Fprintf(&b, "\tmov %%r%d, %%r%d\n", a, r)
			}
		case 7: // an address outside the sandbox
			fmt.Fprintf(&b, "\tmov %%r%d, %%r9\n\tadd %%r%d, %d\n", a, a, 8*(y%canaryWords))
		case 8:
			fmt.Fprintf(&b, "\tmov %%r%d, %%r10\n\tadd %%r%d, -%d\n", a, a, slot)
		case 9:
			fmt.Fprintf(&b, "\tldxdw %%r%d, [%%r1+0]\n", a)
		case 10: // writes its source register
			fmt.Fprintf(&b, "\tlock fetch add [%%r%d%+d], %%r%d\n", r, off, a)
		case 11: // compares with and writes r0
			fmt.Fprintf(&b, "\tlock cmpxchg [%%r%d%+d], %%r%d\n", r, off, a)
		case 13: // an index: bounded, or not
			fmt.Fprintf(&b, "\tand %%r%d, %d\n\tlsh %%r%d, %d\n", a, []int{7, 63, 1023, -1}[y%4], a, y%5)
		case 14:
			fmt.Fprintf(&b, "\tadd %%r%d, %%r%d\n", a, r)
		case 15: // an object or NULL, tested or not
			fmt.Fprintf(&b, "\tmov %%r1, %d\n\tcall 1\n", y)
			switch y % 4 {
			case 0, 1:
				b.WriteString("\tjne %r0, 0, +1\n\tmov %r0, %r6\n")
			case 2: // moved, then tested: NULL+8 passes the test
				b.WriteString("\tadd %r0, 8\n\tjne %r0, 0, +1\n\tmov %r0, %r6\n")
			}
			b.WriteString("\tldxdw %r1, [%r10-64]\n")
			for _, r := range []int{2, 3, 4, 5} {
				fmt.Fprintf(&b, "\tmov %%r%d, %%r%d\n", r, []int{0, 6, 7}[(x+r)%3])
			}
		case 12: // a subprogram with the registers as arguments; r1-r5 are lost
			b.WriteString("\tcall local game\n\tldxdw %r1, [%r10-64]\n")
			for _, r := range []int{2, 3, 4, 5} { // from what the call kept
				fmt.Fprintf(&b, "\tmov %%r%d, %%r%d\n", r, []int{0, 6, 7}[(x+r)%3])
			}
			calls = true
		}
	}
	fmt.Fprintf(&b, "\tmov %%r0, %%r%d\n\tand %%r0, -1\n\texit\n", dsts[len(data)%len(dsts)])
	if !calls {
		return b.String()
	}
	// The subprogram spills its argument r2 and forges the slot with r3
	// through r4 taken as its frame's alias, then reads through the reload.
	b.WriteString(`game:
	stxdw [%r10-8], %r2
	mov %r4, %r10
	and %r4, -1
	stxdw [%r4-8], %r3
	ldxdw %r2, [%r10-8]
	ldxdw %r0, [%r2+0]
	stxdw [%r2+8], %r5
	exit
`)
	return b.String()
}

type sandboxOracle struct {
	m       *jit.Machine
	canary  []uint64
	ctx     []byte
	initial []byte // the sandbox before each run
}

func newSandboxOracle(t testing.TB) *sandboxOracle {
	m := jitMachine(t)
	// Helper 1 allocates: an address in the sandbox for an odd argument,
	// NULL for an even one.
	m.Helpers = map[int32]interp.Helper{1: func(_ interp.Memory, r1, _, _, _, _ uint64) (uint64, error) {
		if r1%2 == 0 {
			return 0, nil
		}
		return m.Base() + uint64(len(m.Sandbox())/2) + r1*8, nil
	}}
	o := &sandboxOracle{m: m, canary: make([]uint64, canaryWords), ctx: make([]byte, 64)}
	// Every sandbox word points into the sandbox, so that only the canary's
	// addresses lead out of it.
	base, size := m.Base(), uint64(len(m.Sandbox()))
	o.initial = make([]byte, size)
	for i := uint64(0); i < size; i += 8 {
		binary.LittleEndian.PutUint64(o.initial[i:], base+(i*97+size/2)%size&^7)
	}
	return o
}

// check verifies, compiles and runs the program data makes; it reports whether
// the verifier accepted it.
func (o *sandboxOracle) check(t testing.TB, data []byte) bool {
	canaryAddr := uint64(uintptr(unsafe.Pointer(&o.canary[0])))
	binary.LittleEndian.PutUint64(o.ctx, canaryAddr)
	src := pointerGame(data, canaryAddr)
	insns, err := bytecode.Assemble(src)
	require.NoError(t, err, src)
	lp, err := loader.Load(insns, loader.Options{JIT: true, Config: &verifier.Config{CtxSize: len(o.ctx), EntryArg: true,
		Helpers: map[int32]verifier.Helper{1: {Name: "alloc", Args: 1, HeapOrNull: true}}}})
	if err != nil {
		require.ErrorIs(t, err, verifier.ErrRejected)
		return false
	}
	defer lp.Close()
	p := lp.JIT

	sb := o.m.Sandbox()
	copy(sb, o.initial)
	for i := range o.canary {
		o.canary[i] = canaryValue(i)
	}
	r0, err := o.m.Run(p, o.ctx)
	require.NoError(t, err)
	for i, w := range o.canary {
		require.Equal(t, canaryValue(i), w, "canary word %d written from the sandbox\n%s", i, src)
	}
	for i := 0; i < canaryWords; i++ {
		require.NotEqual(t, canaryValue(i), r0, "r0 holds a canary word read from outside the sandbox\n%s", src)
	}
	// A cheap search for the canary's high half first; the word scan
	// (slow under the race detector) only where it occurs.
	if bytes.Contains(sb, binary.LittleEndian.AppendUint32(nil, uint32(canaryValue(0)>>32))) {
		for i := 0; i < len(sb); i += 8 {
			if w := binary.LittleEndian.Uint64(sb[i:]); w>>32 == canaryValue(0)>>32 {
				t.Fatalf("sandbox offset %#x holds canary word %#x read from outside\n%s", i, w, src)
			}
		}
	}
	runtime.KeepAlive(o.canary)
	return true
}

// gameSeeds spell the forgeries that once escaped: a spilled stack pointer
// replaced by the canary's address, then reloaded and read through; the same
// for a pointer checked by an earlier access.
var gameSeeds = [][]byte{
	{8, 1, 1, 0, 1, 1, 7, 3, 0, 2, 3, 1, 1, 1, 1, 3, 7, 2},
	{3, 7, 2, 0, 1, 1, 7, 3, 0, 2, 3, 1, 1, 1, 1, 3, 7, 2},
}

func TestSandboxGames(t *testing.T) {
	o := newSandboxOracle(t)
	for _, s := range gameSeeds {
		o.check(t, s)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	accepted := 0
	const n = 1500
	for range n {
		data := testutil.RandomBytes(rng, 3*(4+rng.IntN(40)))
		if o.check(t, data) {
			accepted++
		}
	}
	t.Logf("%d of %d pointer games verified and ran", accepted, n)
	require.Greater(t, accepted, n/4, "the oracle must see accepted programs")
}

func FuzzSandboxGames(f *testing.F) {
	for _, s := range gameSeeds {
		f.Add(s)
	}
	o := newSandboxOracle(f)
	f.Fuzz(func(t *testing.T, data []byte) { o.check(t, data) })
}
