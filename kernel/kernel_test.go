package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/isatest"
	"github.com/kflex-go/kflex/jit/interp"
)

func assemble(t testing.TB, src string) asm.Instructions {
	t.Helper()
	insns, err := bytecode.Assemble(src)
	require.NoError(t, err)
	return insns
}

func TestLoadAndRun(t *testing.T) {
	requireKernel(t)
	p, err := Load(assemble(t, `
		ldxdw %r0, [%r1+0]
		stxdw [%r1+8], %r0
		add %r0, 1
		exit`), Syscall, nil)
	require.NoError(t, err)
	defer p.Close()
	ctx := make([]byte, 16)
	ctx[0] = 41
	r0, out, err := p.Run(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(42), r0)
	assert.Equal(t, byte(41), out[8])
	assert.Equal(t, byte(0), ctx[8], "the caller's context is not modified")

	_, _, err = p.Bench(1)
	assert.ErrorIs(t, err, ErrWrongType)
}

func TestVerifierError(t *testing.T) {
	requireKernel(t)
	_, err := Load(assemble(t, "mov %r0, %r5\nexit"), Syscall, nil)
	var ve *VerifierError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, unix.EACCES, ve.Errno)
	assert.Contains(t, ve.Error(), "R5 !read_ok")
	assert.Greater(t, len(ve.Log), 1)
	// Rejected on the second path, after the first one ends safe: the kernel
	// rewinds its log over that path, and what it leaves after the end of
	// the log is not read as part of it.
	_, err = Load(assemble(t, `
		mov %r9, %r1
		ldxb %r1, [%r9+0]
		jeq %r1, 0, +11
		mov %r0, 1
		mov %r2, 2
		mov %r3, 3
		mov %r4, 4
		mov %r5, 5
		mov %r6, 6
		mov %r7, 7
		mov %r8, 8
		mov %r1, 9
		mov %r0, 0
		exit
		stb [%r10+0], 0
		mov %r0, 0
		exit`), Syscall, nil)
	require.ErrorAs(t, err, &ve)
	assert.Contains(t, ve.Error(), "invalid write to stack")
	assert.Regexp(t, "^processed ", ve.Log[len(ve.Log)-1], "the log ends with its statistics")
	_, err = LoadRaw([]byte{1, 2, 3}, Syscall, nil)
	assert.ErrorContains(t, err, "not a positive multiple of 8")
}

// TestVerifierErrorText: a rejection's text is the reason, as Linux up to 6.18
// logs it last, and as Linux 7 logs it before its explanation (this log is
// Linux 7.3.4's).
func TestVerifierErrorText(t *testing.T) {
	ve := &VerifierError{Errno: unix.EACCES, Log: []string{"0: R1=ctx() R10=fp0", "0: (bf) r0 = r5", "R5 !read_ok",
		"processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0"}}
	assert.Equal(t, "kernel verifier: permission denied: R5 !read_ok", ve.Error())
	ve.Log = []string{"0: R1=ctx() R10=fp0", "0: (bf) r0 = r5", "R5 !read_ok",
		"Verification failed: Register Type Safety: Unreadable register", "Reason:",
		"  R5 has never been initialized on this path, so the verifier cannot use it as an input.",
		"At:", "  insn 0", "       | ^-- error: R5 is not readable", "  Instruction context:",
		"  >>> 0 | (bf) r0 = r5", "      1 | (95) exit", "Causal path:", "  no retained diagnostic events on this path",
		"Suggestion:", "  Initialize R5 on every path before this instruction.",
		"processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0"}
	assert.Equal(t, "kernel verifier: permission denied: R5 !read_ok", ve.Error())
}

// TestAtomicsReachTheKernel runs a compare-and-exchange and a fetch-add built
// with cilium/ebpf's asm: with asm.Marshal's zero immediates both would be plain
// adds; through bytecode.Encode they are what they say.
func TestAtomicsReachTheKernel(t *testing.T) {
	requireKernel(t)
	insns := asm.Instructions{
		asm.Mov.Imm(asm.R0, 10), // expected
		asm.StoreMem(asm.R10, -8, asm.R0, asm.DWord),
		asm.Mov.Imm(asm.R1, 20),                         // new
		asm.CmpXchg.Mem(asm.R10, asm.R1, asm.DWord, -8), // 10 -> 20, r0 = 10
		asm.Mov.Imm(asm.R2, 5),
		asm.FetchAdd.Mem(asm.R10, asm.R2, asm.DWord, -8), // 20 -> 25, r2 = 20
		asm.LoadMem(asm.R3, asm.R10, -8, asm.DWord),
		// r0 = r0*1000000 + r2*1000 + r3 = 10_020_025
		asm.Mul.Imm(asm.R0, 1000000),
		asm.Mul.Imm(asm.R2, 1000),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Add.Reg(asm.R0, asm.R3),
		asm.Return(),
	}
	assert.Equal(t, uint32(10_020_025), runOnce(t, insns))
}

// TestArena runs a program that reads and writes the arena through
// addr_space_cast, on the first and the last page, and checks from Go.
func TestArena(t *testing.T) {
	requireArena(t)
	a, err := NewArena(1 << 20)
	require.NoError(t, err)
	defer a.Close()
	assert.Zero(t, a.Base()%a.Size(), "user address %#x aligned to %#x", a.Base(), a.Size())
	mem := a.Bytes()
	last := a.Size() - 16
	binary.LittleEndian.PutUint64(mem[0:], 1234)
	binary.LittleEndian.PutUint64(mem[last:], 99)

	insns := asm.Instructions{
		a.Ref(asm.R1),
		asm.LoadImm(asm.R2, int64(a.Base()), asm.DWord),
		castKern(asm.R2),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.DWord),
		asm.StoreMem(asm.R2, 8, asm.R0, asm.DWord), // mem[8] = mem[0]
		asm.LoadImm(asm.R3, int64(a.Base()+last), asm.DWord),
		castKern(asm.R3),
		asm.Mov.Imm(asm.R4, 1),
		asm.FetchAdd.Mem(asm.R3, asm.R4, asm.DWord, 0), // mem[last] += 1, r4 = 99
		asm.StoreMem(asm.R3, 8, asm.R4, asm.DWord),     // mem[last+8] = 99
		asm.Return(),
	}
	assert.Equal(t, uint32(1234), runOnce(t, insns))
	assert.Equal(t, uint64(1234), binary.LittleEndian.Uint64(mem[8:]))
	assert.Equal(t, uint64(100), binary.LittleEndian.Uint64(mem[last:]))
	assert.Equal(t, uint64(99), binary.LittleEndian.Uint64(mem[last+8:]), "the last page is populated")

	_, err = NewArena(3 << 20)
	assert.ErrorContains(t, err, "want a power of two")
}

// runOnce loads insns as a syscall program, runs it once without a context and
// returns r0.
func runOnce(t *testing.T, insns asm.Instructions) uint32 {
	t.Helper()
	p, err := Load(insns, Syscall, nil)
	require.NoError(t, err)
	defer p.Close()
	r0, _, err := p.Run(nil)
	require.NoError(t, err)
	return r0
}

func castKern(r asm.Register) asm.Instruction {
	return asm.Instruction{OpCode: asm.Mov.Op(asm.RegSource), Dst: r, Src: r, Offset: 1, Constant: 1}
}

// TestISAInKernel runs the ISA test files in the kernel, as syscall programs on
// their input memory, wherever the kernel verifier accepts them, and compares
// with the interpreter (the kernel reports only r0's low 32 bits). Files the
// verifier rejects (they read r2, call kflex's helper 5, or fault on purpose)
// are listed.
func TestISAInKernel(t *testing.T) {
	requireKernel(t)
	cases, err := isatest.Load("../testdata/isa")
	require.NoError(t, err)
	m := interp.NewMachine()
	m.Helpers = isatest.Helpers()
	ran := 0
	for _, c := range cases {
		if c.Error != "" || c.Name == "may-goto" { // may_goto's bound is a timer in 6.15+
			continue
		}
		p, err := LoadRaw(c.Raw, Syscall, nil)
		if err != nil {
			var ve *VerifierError
			require.ErrorAs(t, err, &ve, c.Name)
			t.Logf("%s: not accepted by the kernel: %v", c.Name, err)
			continue
		}
		kr0, kmem, err := p.Run(bytes.Clone(c.Mem))
		p.Close()
		require.NoError(t, err, c.Name)
		prog, err := interp.LoadBytes(c.Raw)
		require.NoError(t, err)
		mem := bytes.Clone(c.Mem)
		ir0, err := m.Run(prog, mem)
		require.NoError(t, err, c.Name)
		assert.Equal(t, uint32(ir0), kr0, "%s: r0", c.Name)
		assert.Equal(t, uint32(c.Result), kr0, "%s: expected result", c.Name)
		if len(mem) > 0 {
			assert.Equal(t, mem, kmem, "%s: memory", c.Name)
		}
		ran++
	}
	t.Logf("%d of %d ISA files ran in the kernel", ran, len(cases))
	assert.GreaterOrEqual(t, ran, len(cases)/2, "most ISA files run in the kernel")
}

func TestFeatureError(t *testing.T) {
	err := &FeatureError{Feature: "BPF arena", Err: errors.New("EPERM")}
	assert.ErrorIs(t, err, ErrNotSupported)
	assert.EqualError(t, err, "BPF arena: not supported: EPERM")
}
