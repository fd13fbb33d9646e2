package jit

import "github.com/kflex-go/kflex/bytecode"

// After an access sanitizes its base register in place (SanitizeInPlace),
// tmp holds the register's masked offset and the register is sandbox + tmp.
// A later access through the same register can then address [sandbox + tmp +
// off] instead of [register + off]: the same address, but off the lea that
// rebased the register, which otherwise sits on a pointer chase's critical
// path. The compiler keeps that knowledge only across instructions that
// neither touch tmp nor write the register, and never across a jump target
// or an exit (re-entry from Go does not restore tmp).

// noReuse is tmpFor's value when tmp holds nothing known.
const noReuse = -1

// jumpTargets marks the slots some jump or local call lands on.
func jumpTargets(slots []bytecode.Slot) []bool {
	t := make([]bool, len(slots)+1)
	for pc, s := range slots {
		cls := s.Op & 7
		if cls != 0x05 && cls != 0x06 {
			continue
		}
		switch {
		case s.Op == 0x95: // exit
		case s.Op == 0x85: // call: a local call's target; helpers and callx land nowhere
			if s.Src == bytecode.CallLocal {
				mark(t, pc+1+int(s.Imm))
			}
		case s.Op == 0x06: // ja32: the target is in the immediate
			mark(t, pc+1+int(s.Imm))
		default:
			mark(t, pc+1+int(s.Off))
		}
	}
	return t
}

func mark(t []bool, i int) {
	if i >= 0 && i < len(t) {
		t[i] = true
	}
}

// keepsTmp reports whether instruction s, lowered, leaves tmp and eBPF
// register r as they were: ALU operations whose code uses neither tmp nor an
// exit, 64-bit immediates, and memory accesses (mem updates tmpFor itself for
// the ones that guard), as long as they do not write r.
func keepsTmp(s bytecode.Slot, r int) bool {
	cls, op := s.Op&7, s.Op&0xf0
	switch {
	case cls == 0x07 || cls == 0x04:
		if int(s.Dst) == r {
			return false
		}
		reg := s.Op&0x08 != 0
		switch op {
		case 0x00, 0x10, 0x20, 0x40, 0x50, 0xa0: // add sub mul or and xor
			return true
		case 0xb0: // mov (not movsx or addr_space_cast)
			return s.Off == 0
		case 0x60, 0x70, 0xc0: // shifts by an immediate (by a register they use rcx and tmp)
			return !reg
		}
		return false
	case s.Op == bytecode.OpLdDW:
		return int(s.Dst) != r
	case cls == 0x01: // ldx
		return int(s.Dst) != r
	case cls == 0x02, cls == 0x03 && s.Op&0xe0 == 0x60: // st, stx (not atomics)
		return true
	}
	return false
}
