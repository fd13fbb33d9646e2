package jit_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/isatest"
	"github.com/kflex-go/kflex/internal/progen"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func machine(t testing.TB) *jit.Machine {
	t.Helper()
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	m, err := jit.NewMachine(1 << 20)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	m.Helpers = isatest.Helpers()
	return m
}

func compile(t testing.TB, insns asm.Instructions) *jit.Program {
	t.Helper()
	p, err := jit.Compile(insns)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// guardedAway are ISA files whose point is a trapping access: the JIT's guard
// turns the access into one inside the sandbox instead.
var guardedAway = map[string]bool{"oob-stack": true, "oob-null": true}

// TestISA runs every ISA file on the JIT: same result (or error) as expected.
func TestISA(t *testing.T) {
	m := machine(t)
	cases, err := isatest.Load("../testdata/isa")
	require.NoError(t, err)
	for _, c := range cases {
		if guardedAway[c.Name] {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			insns, err := c.Instructions()
			require.NoError(t, err)
			p := compile(t, insns)
			r0, err := m.Run(p, bytes.Clone(c.Mem))
			require.NoError(t, c.Check(r0, err))
		})
	}
}

// runBoth runs insns on the interpreter and the JIT with the same context and
// reports any difference in r0, error or context.
func runBoth(m *jit.Machine, insns asm.Instructions, ctx []byte) error {
	return runBothGuarded(m, insns, ctx, jit.GuardAll)
}

func runBothGuarded(m *jit.Machine, insns asm.Instructions, ctx []byte, g jit.Guard) error {
	ip, err := interp.Load(insns)
	if err != nil {
		return err
	}
	jp, err := jit.CompileGuarded(insns, g)
	if err != nil {
		return err
	}
	defer jp.Close()
	im := interp.NewMachine()
	im.Helpers = isatest.Helpers()
	ictx, jctx := bytes.Clone(ctx), bytes.Clone(ctx)
	ir0, ierr := im.Run(ip, ictx)
	jr0, jerr := m.Run(jp, jctx)
	switch {
	case (ierr == nil) != (jerr == nil):
		return fmt.Errorf("interpreter error %v, JIT error %v\n%v", ierr, jerr, insns)
	case ir0 != jr0 || !bytes.Equal(ictx, jctx):
		return fmt.Errorf("r0 interpreter %#x, JIT %#x\nctx interpreter %x\nctx JIT         %x\n%v", ir0, jr0, ictx, jctx, insns)
	}
	return nil
}

// TestDifferential compares the JIT with the interpreter on generated programs:
// every ALU operation of both widths, swaps, sign extensions, 64-bit constants,
// stack and context memory, atomics and branches.
func TestDifferential(t *testing.T) {
	m := machine(t)
	rng := rand.New(rand.NewPCG(3, 4))
	n := 3000
	if testing.Short() {
		n = 500
	}
	for i := range n {
		data := testutil.RandomBytes(rng, 600)
		src := progen.NewSource(data)
		ctx := progen.Context(src)
		require.NoError(t, runBoth(m, progen.GenerateWith(src, 64, progen.Options{Calls: true}), ctx), "seed %d", i)
	}
}

// TestDifferentialGuards: programs whose accesses are all in bounds give the
// same results whichever guards are compiled in.
func TestDifferentialGuards(t *testing.T) {
	m := machine(t)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, g := range []jit.Guard{jit.GuardStores, jit.GuardNone} {
		for i := range 300 {
			data := testutil.RandomBytes(rng, 600)
			src := progen.NewSource(data)
			ctx := progen.Context(src)
			require.NoError(t, runBothGuarded(m, progen.Generate(src, 64), ctx, g), "guard %d seed %d", g, i)
		}
	}
}

func FuzzDifferential(f *testing.F) {
	m := machine(f)
	f.Add(make([]byte, 32))
	f.Add(bytes.Repeat([]byte{0x91, 0x22, 0x07, 0xf3}, 150))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := progen.NewSource(data)
		ctx := progen.Context(src)
		if err := runBoth(m, progen.GenerateWith(src, 64, progen.Options{Calls: true}), ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestGCWhileLooping runs a program that never ends while another goroutine
// collects garbage: every collection completes (the code returns to Go
// regularly), and Cancel stops the program at a back-edge.
func TestGCWhileLooping(t *testing.T) {
	m := machine(t)
	insns, err := bytecode.Assemble("mov %r0, 0\nloop:\nadd %r0, 1\nja loop\nexit")
	require.NoError(t, err)
	p := compile(t, insns)
	done := make(chan error)
	go func() {
		_, err := m.Run(p, nil)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	// Without the budget exits a collection waits forever. On a loaded
	// machine (make test runs packages side by side on two cores) one
	// collection in five can take seconds for want of a CPU: judge the
	// median.
	var took [5]time.Duration
	for i := range took {
		start := time.Now()
		runtime.GC()
		took[i] = time.Since(start)
	}
	slices.Sort(took[:])
	t.Logf("GCs while the program loops: median %v, slowest %v", took[2], took[4])
	assert.Less(t, took[2], 500*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the program ended by itself: %v", err)
	default:
	}
	m.Cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, abi.ErrCancelled)
		var re *interp.RuntimeError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 2, re.Insn, "the back-edge (ja) is the cancellation point")
	case <-time.After(5 * time.Second):
		t.Fatal("Cancel did not stop the program")
	}
}

// TestCancelledAcrossEngines: a cancelled run stops with the one
// abi.ErrCancelled, whichever engine ran it.
func TestCancelledAcrossEngines(t *testing.T) {
	insns, err := bytecode.Assemble("mov %r0, 0\nloop:\nadd %r0, 1\nja loop\nexit")
	require.NoError(t, err)
	jm, jp := machine(t), compile(t, insns)
	im := interp.NewMachine()
	ip, err := interp.Load(insns)
	require.NoError(t, err)
	for name, e := range map[string]struct {
		run    func() error
		cancel func()
	}{
		"jit":    {func() error { _, err := jm.Run(jp, nil); return err }, jm.Cancel},
		"interp": {func() error { _, err := im.Run(ip, nil); return err }, im.Cancel},
	} {
		done := make(chan error)
		go func() { done <- e.run() }()
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case err := <-done:
				assert.ErrorIs(t, err, abi.ErrCancelled, name)
				break wait
			case <-deadline:
				t.Fatalf("%s: Cancel did not stop the program", name)
			case <-time.After(5 * time.Millisecond):
				e.cancel() // again: a Run that had not started yet cleared it
			}
		}
	}
}

// TestGuards writes through wild pointers and just outside both ends of the
// sandbox: the process survives and the sandbox's edges are unchanged.
func TestGuards(t *testing.T) {
	m := machine(t)
	sb := m.Sandbox()
	size := uint64(len(sb))
	last := bytes.Clone(sb[size-4096:])
	first := bytes.Clone(sb[:8])
	src := fmt.Sprintf(`
		lddw %%r1, %d
		stdw [%%r1-32768], 7
		lddw %%r1, %d
		stdw [%%r1+32760], 7
		lddw %%r1, 0xdeadbeefcafef00d
		ldxdw %%r0, [%%r1+0]
		mov %%r0, 1
		exit`, m.Base(), m.Base()+size-8)
	insns, err := bytecode.Assemble(src)
	require.NoError(t, err)
	r0, err := m.Run(compile(t, insns), nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), r0)
	assert.Equal(t, first, sb[:8], "the write below the sandbox went to the guard region")
	assert.Equal(t, last, sb[size-4096:], "and the write above it too")
}

func TestCompileErrors(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skip(err)
	}
	for src, want := range map[string]string{
		"mov %r0, 1":           "falls off the end",
		"call runtime 3\nexit": "call to kernel function (BTF id 3) is not supported",
	} {
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err)
		_, err = jit.Compile(insns)
		assert.ErrorContains(t, err, want, src)
	}
	_, err := jit.NewMachine(3 << 20)
	assert.ErrorContains(t, err, "want a power of two")
	m := machine(t)
	_, err = m.Run(compile(t, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}), make([]byte, jit.MaxCtxSize+1))
	assert.ErrorContains(t, err, "exceeds")
	assert.True(t, strings.HasPrefix(err.Error(), "jit: "))
}

// TestAddrSpaceCast compares the JIT's casts with the interpreter's on the
// same memory: a pointer from another view comes into the sandbox, NULL stays.
func TestAddrSpaceCast(t *testing.T) {
	m := machine(t)
	sb := m.Sandbox()
	im := interp.NewMachine()
	im.AttachHeap(unsafe.Pointer(&sb[0]), uint64(len(sb)), m.Base())
	cast := func(dst, src asm.Register, imm int64) asm.Instruction {
		return asm.Instruction{OpCode: asm.Mov.Op(asm.RegSource), Dst: dst, Src: src, Offset: 1, Constant: imm}
	}
	foreign := uint64(0x7000_0000_0000) + 0x1238 // offset 0x1238 in some other view
	insns := asm.Instructions{
		asm.LoadImm(asm.R1, int64(foreign), asm.DWord),
		cast(asm.R2, asm.R1, 1),
		cast(asm.R3, asm.R1, 1<<16),
		asm.Mov.Imm(asm.R4, 0),
		cast(asm.R4, asm.R4, 1),
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.Add.Reg(asm.R0, asm.R3),
		asm.Add.Reg(asm.R0, asm.R4),
		asm.Return(),
	}
	want := 2 * (m.Base() + 0x1238)
	r0, err := m.Run(compile(t, insns), nil)
	require.NoError(t, err)
	assert.Equal(t, want, r0)
	ip, err := interp.Load(insns)
	require.NoError(t, err)
	ir0, err := im.Run(ip, nil)
	require.NoError(t, err)
	assert.Equal(t, want, ir0)
}

// TestStackAccessesUnguarded: accesses through r10 need no guard (r10 is
// read-only and its frames sit inside the sandbox with guard regions within
// reach of any offset); the others keep theirs.
func TestStackAccessesUnguarded(t *testing.T) {
	machine(t)
	insns, err := bytecode.Assemble("stdw [%r10-8], 1\nldxdw %r0, [%r10-8]\nldxdw %r2, [%r1+0]\nexit")
	require.NoError(t, err)
	p := compile(t, insns)
	kept, elided := p.Guards()
	assert.Equal(t, 1, kept, "the context access")
	assert.Equal(t, 2, elided, "the stack accesses")
	// The farthest offsets from the stack land in sandbox or guard memory.
	m := machine(t)
	insns, err = bytecode.Assemble("stdw [%r10-32768], 7\nstdw [%r10+32760], 7\nldxdw %r0, [%r10-32768]\nexit")
	require.NoError(t, err)
	r0, err := m.Run(compile(t, insns), nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), r0)
}

// TestEntryArgument: r3 at entry is the context's first word masked into the
// sandbox, whatever the word is (interp.TestEntryArgument: the same there).
func TestEntryArgument(t *testing.T) {
	m := machine(t)
	p := compile(t, asm.Instructions{asm.Mov.Reg(asm.R0, asm.R3), asm.Return()})
	ctx := make([]byte, 8)
	binary.LittleEndian.PutUint64(ctx, 0xdead_0000_0123)
	r0, err := m.Run(p, ctx)
	require.NoError(t, err)
	assert.Equal(t, m.Base()+0x123, r0)
	r0, err = m.Run(p, nil)
	require.NoError(t, err)
	assert.Zero(t, r0, "no context: r3 is not set")
}
