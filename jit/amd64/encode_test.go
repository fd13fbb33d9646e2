package amd64

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// disasm decodes one instruction and prints it in Intel syntax.
func disasm(t *testing.T, code []byte) string {
	t.Helper()
	inst, err := x86asm.Decode(code, 64)
	require.NoError(t, err, "% x", code)
	require.Equal(t, len(code), inst.Len, "one instruction: % x", code)
	return x86asm.IntelSyntax(inst, 0, nil)
}

// TestEncode checks every instruction form the JIT uses, with registers that
// need REX bits, SIB bytes and forced displacements, against x86asm.
func TestEncode(t *testing.T) {
	cases := []struct {
		emit func(a *Asm)
		want string
	}{
		{func(a *Asm) { a.RR(ADD, true, RAX, RBX) }, "add rax, rbx"},
		{func(a *Asm) { a.RR(SUB, false, R15, R8) }, "sub r15d, r8d"},
		{func(a *Asm) { a.RR(XOR, true, R12, RDI) }, "xor r12, rdi"},
		{func(a *Asm) { a.RR(MOV, true, R11, RBP) }, "mov r11, rbp"},
		{func(a *Asm) { a.RR(MOV, false, RAX, RAX) }, "mov eax, eax"},
		{func(a *Asm) { a.RR(CMP, true, R13, R14) }, "cmp r13, r14"},
		{func(a *Asm) { a.RR(TEST, true, RCX, RDX) }, "test rcx, rdx"},
		{func(a *Asm) { a.RI(ADD, true, RAX, 5) }, "add rax, 0x5"},
		{func(a *Asm) { a.RI(AND, false, R9, 0x12345678) }, "and r9d, 0x12345678"},
		{func(a *Asm) { a.RI(OR, true, RSI, -1) }, "or rsi, -0x1"},
		{func(a *Asm) { a.RI(CMP, false, RBX, -200) }, "cmp ebx, -0xc8"},
		{func(a *Asm) { a.RI(MOV, true, R10, -7) }, "mov r10, -0x7"},
		{func(a *Asm) { a.RI(MOV, false, RDI, 7) }, "mov edi, 0x7"},
		{func(a *Asm) { a.RI(TEST, true, R8, 0x80) }, "test r8, 0x80"},
		{func(a *Asm) { a.MovImm(RAX, 42) }, "mov eax, 0x2a"},
		{func(a *Asm) { a.MovImm(R13, 0xffffffff) }, "mov r13d, -0x1"},
		{func(a *Asm) { a.MovImm(R13, ^uint64(0)) }, "mov r13, -0x1"},
		{func(a *Asm) { a.MovImm(RCX, 0x1122334455667788) }, "mov rcx, 0x1122334455667788"},
		{func(a *Asm) { a.Imul(true, R14, RDX) }, "imul r14, rdx"},
		{func(a *Asm) { a.ImulImm(false, RBX, 1000) }, "imul ebx, ebx, 0x3e8"},
		{func(a *Asm) { a.Un(NEG, true, R15) }, "neg r15"},
		{func(a *Asm) { a.Un(DIV, true, R11) }, "div r11"},
		{func(a *Asm) { a.Un(IDIV, false, R11) }, "idiv r11d"},
		{func(a *Asm) { a.ShiftCL(SHL, true, RDI) }, "shl rdi, cl"},
		{func(a *Asm) { a.ShiftCL(SAR, false, R8) }, "sar r8d, cl"},
		{func(a *Asm) { a.ShiftImm(SHR, true, RAX, 63) }, "shr rax, 0x3f"},
		{func(a *Asm) { a.Rol16(RSI, 8) }, "rol si, 0x8"},
		{func(a *Asm) { a.Cqo() }, "cqo"},
		{func(a *Asm) { a.Cdq() }, "cdq"},
		{func(a *Asm) { a.Bswap(true, R12) }, "bswap r12"},
		{func(a *Asm) { a.Bswap(false, RDX) }, "bswap edx"},
		{func(a *Asm) { a.Movsx(true, RAX, RSI, 8) }, "movsx rax, sil"},
		{func(a *Asm) { a.Movsx(false, R9, RDI, 8) }, "movsx r9d, dil"},
		{func(a *Asm) { a.Movsx(true, RCX, R15, 16) }, "movsx rcx, r15w"},
		{func(a *Asm) { a.Movsx(true, RBX, RBP, 32) }, "movsxd rbx, ebp"},
		{func(a *Asm) { a.Movzx(RAX, RDI, 8) }, "movzx eax, dil"},
		{func(a *Asm) { a.Movzx(R11, RBX, 16) }, "movzx r11d, bx"},
		{func(a *Asm) { a.Load(1, RAX, M(RBP, -8)) }, "movzx eax, byte ptr [rbp-0x8]"},
		{func(a *Asm) { a.Load(2, R13, M(R12, 0)) }, "movzx r13d, word ptr [r12]"},
		{func(a *Asm) { a.Load(4, RSI, M(R13, 0)) }, "mov esi, dword ptr [r13]"},
		{func(a *Asm) { a.Load(8, RDI, M(RSP, 0x1000)) }, "mov rdi, qword ptr [rsp+0x1000]"},
		{func(a *Asm) { a.Load(8, RAX, MI(R12, R11, -32768)) }, "mov rax, qword ptr [r12+r11+0xffff8000]" /* x86asm prints disp32 unsigned */},
		{func(a *Asm) { a.Load(4, R8, MI(R12, RBX, 4)) }, "mov r8d, dword ptr [r12+rbx+0x4]"},
		{func(a *Asm) { a.LoadSX(1, RAX, M(RDI, 1)) }, "movsx rax, byte ptr [rdi+0x1]"},
		{func(a *Asm) { a.LoadSX(2, R14, MI(R12, R11, 2)) }, "movsx r14, word ptr [r12+r11+0x2]"},
		{func(a *Asm) { a.LoadSX(4, RBX, M(R10, 8)) }, "movsxd rbx, dword ptr [r10+0x8]"},
		{func(a *Asm) { a.Store(1, M(RBP, -1), RSI) }, "mov byte ptr [rbp-0x1], sil"},
		{func(a *Asm) { a.Store(1, MI(R12, R11, 0), RAX) }, "mov byte ptr [r12+r11], al"},
		{func(a *Asm) { a.Store(2, M(R13, 6), R9) }, "mov word ptr [r13+0x6], r9w"},
		{func(a *Asm) { a.Store(4, M(RBP, -4), RCX) }, "mov dword ptr [rbp-0x4], ecx"},
		{func(a *Asm) { a.Store(8, MI(R12, R11, 300), R15) }, "mov qword ptr [r12+r11+0x12c], r15"},
		{func(a *Asm) { a.StoreImm(1, M(RBP, -1), -1) }, "mov byte ptr [rbp-0x1], 0xff"},
		{func(a *Asm) { a.StoreImm(2, M(RDI, 2), 0x1234) }, "mov word ptr [rdi+0x2], 0x1234"},
		{func(a *Asm) { a.StoreImm(4, MI(R12, R11, 0), 7) }, "mov dword ptr [r12+r11], 0x7"},
		{func(a *Asm) { a.StoreImm(8, M(RBP, -8), -3) }, "mov qword ptr [rbp-0x8], -0x3"},
		{func(a *Asm) { a.Lea(R11, M(RDI, 16)) }, "lea r11, ptr [rdi+0x10]"},
		{func(a *Asm) { a.LockXadd(true, MI(R12, R11, -8), RSI) }, "lock xadd qword ptr [r12+r11-0x8], rsi"},
		{func(a *Asm) { a.LockXadd(false, M(RBP, -4), R8) }, "lock xadd dword ptr [rbp-0x4], r8d"},
		{func(a *Asm) { a.Xchg(true, M(RBP, -8), RAX) }, "xchg qword ptr [rbp-0x8], rax"},
		{func(a *Asm) { a.LockCmpxchg(false, MI(R12, R11, 0), RDX) }, "lock cmpxchg dword ptr [r12+r11], edx"},
		{func(a *Asm) { a.LockOp(OR, true, M(RBP, -16), R9) }, "lock or qword ptr [rbp-0x10], r9"},
		{func(a *Asm) { a.LockOp(XOR, false, MI(R12, R11, 4), RCX) }, "lock xor dword ptr [r12+r11+0x4], ecx"},
		{func(a *Asm) { a.MemImm8(SUB, true, M(R10, 64), 1) }, "sub qword ptr [r10+0x40], 0x1"},
		{func(a *Asm) { a.MemImm8(CMP, false, M(R11, 0), 0) }, "cmp dword ptr [r11], 0x0"},
		{func(a *Asm) { a.JmpReg(R11) }, "jmp r11"},
		{func(a *Asm) { a.JmpMem(M(R10, 24)) }, "jmp qword ptr [r10+0x18]"},
		{func(a *Asm) { a.RM(OR, true, RCX, M(R10, 16)) }, "or rcx, qword ptr [r10+0x10]"},
		{func(a *Asm) { a.RM(MOV, false, R11, M(RBP, -4)) }, "mov r11d, dword ptr [rbp-0x4]"},
		{func(a *Asm) { a.Ret() }, "ret"},
		{func(a *Asm) { a.Int3() }, "int3"},
	}
	for _, tc := range cases {
		var a Asm
		tc.emit(&a)
		assert.Equal(t, tc.want, disasm(t, a.Buf), "% x", a.Buf)
	}
}

func TestJumps(t *testing.T) {
	var a Asm
	j := a.Jcc(CondNE)
	a.Ret()
	a.Patch(j, 0) // back to the jump itself
	assert.Equal(t, "jnz .-0x6", disasm(t, a.Buf[:6]))
	var b Asm
	j = b.Jmp()
	b.Int3()
	b.Patch(j, b.Len())
	assert.Equal(t, "jmp .+0x1", disasm(t, b.Buf[:5]))
	var c Asm
	at := c.LeaRIP(R11)
	c.Patch(at, c.Len()+16)
	assert.Equal(t, "lea r11, ptr [rip+0x10]", disasm(t, c.Buf))
	for cond, name := range map[Cond]string{CondB: "jb", CondAE: "jnb", CondE: "jz", CondBE: "jbe", CondA: "jnbe",
		CondL: "jl", CondGE: "jnl", CondLE: "jle", CondG: "jnle"} {
		var d Asm
		d.Patch(d.Jcc(cond), 6)
		assert.Equal(t, name+" .+0x0", disasm(t, d.Buf), hex.EncodeToString(d.Buf))
	}
}
