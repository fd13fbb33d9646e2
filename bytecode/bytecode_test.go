package bytecode

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

// TestCiliumMarshalBugs shows what asm.Instructions.Marshal gets wrong in
// cilium/ebpf v0.22.0 and that Encode gets right. If the first assertion of a
// case starts failing, cilium/ebpf was fixed and Encode can defer to it.
func TestCiliumMarshalBugs(t *testing.T) {
	cases := []struct {
		name   string
		ins    asm.Instruction
		cilium string // what Marshal writes
		want   string // the ISA encoding
	}{
		{"cmpxchg", asm.CmpXchg.Mem(asm.R1, asm.R2, asm.DWord, 0), "db21000000000000", "db210000f1000000"},
		{"xchg", asm.Xchg.Mem(asm.R1, asm.R2, asm.DWord, 8), "db21080000000000", "db210800e1000000"},
		{"fetch add", asm.FetchAdd.Mem(asm.R1, asm.R2, asm.Word, 0), "c321000000000000", "c321000001000000"},
		{"addr_space_cast", asm.Instruction{OpCode: asm.Mov.Op(asm.RegSource), Dst: asm.R1, Src: asm.R2, Offset: 1, Constant: 1},
			"bf21000001000000", "bf21010001000000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, asm.Instructions{tc.ins}.Marshal(&buf, nativeEndian))
			assert.Equal(t, tc.cilium, hex.EncodeToString(buf.Bytes()), "cilium/ebpf's encoding (the bug)")
			got, err := Encode(asm.Instructions{tc.ins})
			require.NoError(t, err)
			assert.Equal(t, tc.want, hex.EncodeToString(got))
			back, err := Decode(got)
			require.NoError(t, err)
			assert.Equal(t, tc.ins.OpCode, back[0].OpCode)
			assert.Equal(t, tc.ins.Offset, back[0].Offset)
		})
	}
}

// TestRoundTripEveryOpcode decodes and re-encodes every opcode byte with a range
// of register, offset and immediate fields; the bytes must come back unchanged,
// valid or not.
func TestRoundTripEveryOpcode(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fields := []struct {
		regs byte
		off  int16
		imm  int32
	}{{0x00, 0, 0}, {0x21, 1, 1}, {0xa1, -1, -1}, {0x13, 8, 16}, {0x34, 16, 32}, {0x45, 32, 64},
		{0x01, 0, 0xf1}, {0x01, 0, 0xe1}, {0x01, 0, 0x41}, {0x01, 0, 0x100}, {0x01, 1, 1 << 16}}
	for op := range 256 {
		for _, f := range fields {
			for range 4 {
				raw := []byte{byte(op), f.regs, byte(f.off), byte(f.off >> 8),
					byte(f.imm), byte(f.imm >> 8), byte(f.imm >> 16), byte(f.imm >> 24)}
				if op == 0x18 {
					raw = append(raw, 0, 0, 0, 0, byte(rng.Uint32()), 2, 3, 4)
				}
				insns, err := Decode(raw)
				if err != nil {
					continue // e.g. an atomic immediate beyond 0x1ff
				}
				got, err := Encode(insns)
				require.NoError(t, err, "opcode %#02x %x", op, raw)
				require.Equal(t, raw, got, "opcode %#02x: %v", op, insns[0])
				f.imm = int32(rng.Uint32()) & 0x1ff
			}
		}
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(unhex(f, "b7000000010000009500000000000000"))
	f.Add(unhex(f, "18010000443322110000000088776655"))
	f.Add(unhex(f, "db210000f1000000"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		insns, err := Decode(raw)
		if err != nil {
			return
		}
		got, err := Encode(insns)
		require.NoError(t, err)
		require.Equal(t, raw, got)
		_ = Validate(insns) // must not panic
	})
}

func TestDecodeErrors(t *testing.T) {
	_, err := Decode(make([]byte, 12))
	assert.EqualError(t, err, "bytecode length 12 is not a multiple of 8")
	_, err = Decode(unhex(t, "b700000001000000 1801000001000000"))
	assert.EqualError(t, err, "instruction 1: lddw is missing its second half")
	_, err = Decode(unhex(t, "1801000001000000 9500000000000000"))
	assert.EqualError(t, err, "instruction 0: lddw second half has non-zero opcode, registers or offset")
	_, err = Decode(unhex(t, "db21000000020000"))
	assert.EqualError(t, err, "instruction 0: atomic operation 0x200 out of range")
}

func TestValidate(t *testing.T) {
	cases := []struct {
		src, err string
	}{
		{"mov %r0, 0\nexit", ""},
		{"mov %r0, 0", "instruction 0: MovImm: last instruction falls off the end of the program"},
		{"mov %r10, 0\nexit", "instruction 0: MovImm: writes the read-only frame pointer"},
		{"ja +5\nexit", "instruction 0: Ja: target 6 outside the program (0..1)"},
		{"ja -2\nexit", "instruction 0: Ja: target -1 outside the program (0..1)"},
		{"ja +1\nlddw %r0, 1\nexit", "instruction 0: Ja: target 2 is the second half of an lddw"},
		{"call local +7\nexit", "instruction 0: Call: target 8 outside the program (0..1)"},
		{"lock fetch add32 [%r1], %r2\nexit", ""},
		{"ldxwsx %r0, [%r1]\nexit", ""},
		{"movsx3264 %r0, %r1\nexit", ""},
	}
	for _, tc := range cases {
		insns, err := Assemble(tc.src)
		require.NoError(t, err, tc.src)
		err = Validate(insns)
		if tc.err == "" {
			assert.NoError(t, err, tc.src)
			continue
		}
		assert.EqualError(t, err, tc.err, tc.src)
		var e *Error
		assert.ErrorAs(t, err, &e)
	}
	raw := map[string]string{
		"unknown opcode":        "ff00000000000000 9500000000000000",
		"legacy packet access":  "2000000000000000 9500000000000000",
		"unknown atomic":        "db21000002000000 9500000000000000",
		"byte swap width":       "d400000008000000 9500000000000000",
		"(offset) is not zero":  "0701010001000000 9500000000000000",
		"only may_goto":         "e501000000000000 9500000000000000",
		"32-bit movsx":          "bc10200000000000 9500000000000000",
		"bad addr_space_cast":   "bf21010002000000 9500000000000000",
		"bad source register":   "bfb0000000000000 9500000000000000",
		"reserved fields of ja": "0501000000000000 9500000000000000",
	}
	for want, hexed := range raw {
		insns, err := Decode(unhex(t, hexed))
		require.NoError(t, err)
		assert.ErrorContains(t, Validate(insns), want)
		assert.ErrorContains(t, Validate(insns), "instruction 0: ")
	}
	assert.EqualError(t, Validate(nil), "instruction 0: empty program")
}

func TestAssemble(t *testing.T) {
	insns, err := Assemble(`
		# a comment
		mov %r0, 0x10        // another
		lddw r1, 0x1122334455667788
	loop:
		add32 %r0, -1
		jne %r0, 0, loop
		lock fetch add [%r10-8], %r1
		stxh [%r1+2], %r2
		be16 %r0
		swap64 %r0
		call local fn
		ja32 end
		call %r3
		addr_space_cast %r2, %r1, 1
		addr_space_cast %r2, %r2, 65536
	fn:
		exit
	end:
		exit`)
	require.NoError(t, err)
	raw, err := Encode(insns)
	require.NoError(t, err)
	want := "b700000010000000" + "1801000088776655" + "0000000044332211" +
		"04000000ffffffff" + "5500feff00000000" + "db1af8ff01000000" + "6b21020000000000" +
		"dc00000010000000" + "d700000040000000" + "8510000004000000" + "0600000004000000" +
		"8d03000000000000" + "bf12010001000000" + "bf22010000000100" + "9500000000000000" + "9500000000000000"
	assert.Equal(t, want, hex.EncodeToString(raw))
	assert.NoError(t, Validate(insns))

	// A 32-bit operation keeps the low half of a wider immediate; a 64-bit
	// one refuses it.
	wide, err := Assemble("mov32 %r1, 0x876543210")
	require.NoError(t, err)
	narrow, err := Assemble("mov32 %r1, 0x76543210")
	require.NoError(t, err)
	assert.Equal(t, narrow, wide)
	_, err = Assemble("mov %r1, 0x876543210")
	assert.ErrorContains(t, err, `immediate "0x876543210" does not fit 32 bits`)

	// bpf_conformance writes the unconditional swaps bswapN.
	for _, width := range []string{"16", "32", "64"} {
		ours, err := Assemble("swap" + width + " %r3")
		require.NoError(t, err)
		theirs, err := Assemble("bswap" + width + " %r3")
		require.NoError(t, err)
		assert.Equal(t, ours, theirs, width)
		assert.Equal(t, "d7", hex.EncodeToString([]byte{byte(theirs[0].OpCode)}), width)
	}

	dflt, err := Assemble("mov %r0, 1\njeq %r0, 1, exit\nmov %r0, 2\nexit\nmov %r0, 3\nexit")
	require.NoError(t, err)
	assert.Equal(t, int16(1), dflt[1].Offset, `"exit" is the first exit`)

	for src, msg := range map[string]string{
		"frob %r0":                    `unknown mnemonic "frob"`,
		"mov %r0":                     "mov takes 2 operand(s), got 1",
		"mov %r99, 1":                 `bad register "%r99"`,
		"ja nowhere\nexit":            `undefined label "nowhere"`,
		"x:\nx:\nexit":                `label "x" defined twice`,
		"mov %r0, 1zz":                `bad immediate "1zz"`,
		"mov %r0, 0x1ffffffff":        "does not fit 32 bits",
		"ldxw %r0, %r1":               `bad memory operand "%r1"`,
		"addr_space_cast %r0, %r1, 2": "address space cast 2: want 1",
	} {
		_, err := Assemble(src)
		assert.ErrorContains(t, err, msg, src)
		assert.ErrorContains(t, err, "line ", src)
	}
}

func TestDecodeSlots(t *testing.T) {
	raw := unhex(t, "18010000443322110000000088776655 bf120100010000009500000000000000")
	s := DecodeSlots(raw)
	require.Len(t, s, 4)
	assert.Equal(t, Slot{Op: OpLdDW, Dst: 1, Imm: 0x11223344, Imm64: 0x5566778811223344}, s[0])
	assert.Equal(t, Slot{}, s[1], "an lddw's second slot is empty")
	assert.Equal(t, Slot{Op: 0xbf, Dst: 2, Src: 1, Off: 1, Imm: 1, Imm64: 1}, s[2])
	assert.Equal(t, 8, MemSize(0x7b))
	assert.Equal(t, 1, MemSize(0x71))
}

// TestKernelText: instructions written as Linux's verifier log writes them.
// kernel.TestKernelTextMatchesLinux compares every form Linux accepts in a
// syscall program with the kernel's own log; these are the rest.
func TestKernelText(t *testing.T) {
	for src, want := range map[string]string{
		"call local f\nf:\nexit":          "call pc+0",
		"call %r2":                        "callx r2",
		"call runtime 7":                  "call kernel-function#7",
		"call 9":                          "call unknown#9",
		"addr_space_cast %r1, %r2, 1":     "r1 = addr_space_cast(r2, 0, 1)",
		"addr_space_cast %r1, %r1, 65536": "r1 = addr_space_cast(r1, 1, 0)",
		"jeq %r1, -1, -3":                 "if r1 == 0xffffffff goto pc-3",
		"movsx832 %r1, %r2":               "w1 = (s8)w2",
	} {
		insns, err := Assemble(src)
		require.NoError(t, err, src)
		raw, err := Encode(insns)
		require.NoError(t, err)
		assert.Equal(t, want, KernelText(DecodeSlots(raw)[0], nil), src)
	}
	assert.Equal(t, "call bpf_ktime_get_ns#5", KernelText(Slot{Op: 0x85, Imm: 5},
		func(int32) string { return "bpf_ktime_get_ns" }))
}
