package bytecode

import "fmt"

// KernelText writes instruction s as Linux's verifier log does
// (kernel/bpf/disasm.c): "r2 += 7", "w3 = (s16)w2", "if r1 s> 0x5 goto pc+2",
// "r0 = *(u32 *)(r1 +4)", "lock *(u64 *)(r10 -8) += r1", so that kflex's
// rejection logs read like the kernel's. helper names helper calls (nil: by
// number only).
func KernelText(s Slot, helper func(int32) string) string {
	cls, op := s.Op&7, s.Op&0xf0
	switch cls {
	case 0x04, 0x07:
		return aluText(s, cls == 0x07)
	case 0x05, 0x06:
		return jumpText(s, cls == 0x06, helper)
	case 0x00:
		if s.Op == OpLdDW {
			return fmt.Sprintf("r%d = %#x", s.Dst, s.Imm64)
		}
	case 0x01:
		return fmt.Sprintf("r%d = *(%s *)(r%d %+d)", s.Dst, memType(s.Op, s.Op&0xe0 == 0x80), s.Src, s.Off)
	case 0x02:
		return fmt.Sprintf("*(%s *)(r%d %+d) = %d", memType(s.Op, false), s.Dst, s.Off, s.Imm)
	case 0x03:
		if s.Op&0xe0 == 0x60 {
			return fmt.Sprintf("*(%s *)(r%d %+d) = r%d", memType(s.Op, false), s.Dst, s.Off, s.Src)
		}
		return atomicText(s)
	}
	return fmt.Sprintf("invalid opcode %#02x (op %#02x)", s.Op, op)
}

// KernelLine is slot pc's line in Linux's verifier log: "12: (bf) r6 = r1",
// the slot number, the opcode in hex and KernelText.
func KernelLine(pc int, s Slot, helper func(int32) string) string {
	return fmt.Sprintf("%d: (%02x) %s", pc, s.Op, KernelText(s, helper))
}

var aluSymbols = map[uint8]string{0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=",
	0x60: "<<=", 0x70: ">>=", 0x90: "%=", 0xa0: "^=", 0xb0: "=", 0xc0: "s>>="}

func aluText(s Slot, wide bool) string {
	r := "w"
	if wide {
		r = "r"
	}
	reg := s.Op&0x08 != 0
	src := fmt.Sprintf("%d", s.Imm)
	if reg {
		src = fmt.Sprintf("%s%d", r, s.Src)
	}
	switch op := s.Op & 0xf0; {
	case op == 0x80:
		return fmt.Sprintf("%s%d = -%s%d", r, s.Dst, r, s.Dst)
	case op == 0xd0:
		kind := "le"
		switch {
		case wide: // ALU64 | END: an unconditional byte swap
			kind = "bswap"
		case reg:
			kind = "be"
		}
		return fmt.Sprintf("r%d = %s%d r%d", s.Dst, kind, s.Imm, s.Dst)
	case op == 0xb0 && reg && s.Off == 1:
		return fmt.Sprintf("r%d = addr_space_cast(r%d, %d, %d)", s.Dst, s.Src, s.Imm>>16, s.Imm&0xffff)
	case op == 0xb0 && reg && s.Off != 0:
		return fmt.Sprintf("%s%d = (s%d)%s%d", r, s.Dst, s.Off, r, s.Src)
	case (op == 0x30 || op == 0x90) && s.Off == 1:
		return fmt.Sprintf("%s%d s%s %s", r, s.Dst, aluSymbols[op], src)
	default:
		return fmt.Sprintf("%s%d %s %s", r, s.Dst, aluSymbols[op], src)
	}
}

var jumpSymbols = map[uint8]string{0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>",
	0x70: "s>=", 0xa0: "<", 0xb0: "<=", 0xc0: "s<", 0xd0: "s<="}

func jumpText(s Slot, narrow bool, helper func(int32) string) string {
	switch op := s.Op & 0xf0; {
	case s.Op == 0x95:
		return "exit"
	case s.Op == 0x05:
		return fmt.Sprintf("goto pc%+d", s.Off)
	case s.Op == 0x06:
		return fmt.Sprintf("gotol pc%+d", s.Imm)
	case s.Op == 0xe5:
		return fmt.Sprintf("may_goto pc%+d", s.Off)
	case s.Op == 0x85 && s.Src == CallLocal:
		return fmt.Sprintf("call pc%+d", s.Imm)
	case s.Op == 0x85 && s.Src == 2:
		return fmt.Sprintf("call kernel-function#%d", s.Imm)
	case s.Op == 0x85:
		name := "unknown"
		if helper != nil {
			if n := helper(s.Imm); n != "" {
				name = n
			}
		}
		return fmt.Sprintf("call %s#%d", name, s.Imm)
	case s.Op == 0x8d:
		return fmt.Sprintf("callx r%d", s.Dst)
	default:
		r := "r"
		if narrow {
			r = "w"
		}
		src := fmt.Sprintf("%#x", uint32(s.Imm))
		if s.Op&0x08 != 0 {
			src = fmt.Sprintf("%s%d", r, s.Src)
		}
		return fmt.Sprintf("if %s%d %s %s goto pc%+d", r, s.Dst, jumpSymbols[op], src, s.Off)
	}
}

func memType(op uint8, signed bool) string {
	t := "u"
	if signed {
		t = "s"
	}
	return fmt.Sprintf("%s%d", t, 8*MemSize(op))
}

func atomicText(s Slot) string {
	size, fn := memType(s.Op, false), "atomic64_"
	if MemSize(s.Op) == 4 {
		fn = "atomic_"
	}
	at := fmt.Sprintf("(%s *)(r%d %+d)", size, s.Dst, s.Off)
	switch s.Imm {
	case AtomicXchg:
		return fmt.Sprintf("r%d = %sxchg(%s, r%d)", s.Src, fn, at, s.Src)
	case AtomicCmpXchg:
		return fmt.Sprintf("r0 = %scmpxchg(%s, r0, r%d)", fn, at, s.Src)
	case LoadAcquire:
		return fmt.Sprintf("r%d = load_acquire(%s)", s.Dst, fmt.Sprintf("(%s *)(r%d %+d)", size, s.Src, s.Off))
	case StoreRelease:
		return fmt.Sprintf("store_release(%s, r%d)", at, s.Src)
	}
	base := s.Imm &^ AtomicFetch
	if s.Imm&AtomicFetch != 0 {
		return fmt.Sprintf("r%d = %sfetch_%s(%s, r%d)", s.Src, fn, atomicNames[base], at, s.Src)
	}
	return fmt.Sprintf("lock *%s %s r%d", at, atomicSymbols[base], s.Src)
}

var (
	atomicNames   = map[int32]string{AtomicAdd: "add", AtomicOr: "or", AtomicAnd: "and", AtomicXor: "xor"}
	atomicSymbols = map[int32]string{AtomicAdd: "+=", AtomicOr: "|=", AtomicAnd: "&=", AtomicXor: "^="}
)
