package bytecode

import "encoding/binary"

// Slot is one decoded instruction slot, in the raw terms executors dispatch
// on: the opcode byte and the fields as encoded. An lddw's Imm64 holds its
// 64-bit value; its second slot is a zero Slot.
type Slot struct {
	Op       uint8
	Dst, Src uint8
	Off      int16
	Imm      int32
	Imm64    uint64 // lddw's constant; otherwise Imm sign-extended
}

// OpLdDW is the opcode of the 64-bit immediate load.
const OpLdDW = 0x18

// DecodeSlots splits raw bytecode (validated) into slots.
func DecodeSlots(raw []byte) []Slot {
	slots := make([]Slot, len(raw)/SlotSize)
	for i := 0; i < len(slots); i++ {
		b := raw[i*SlotSize:]
		s := &slots[i]
		s.Op, s.Dst, s.Src = b[0], b[1]&0xf, b[1]>>4
		s.Off = int16(binary.LittleEndian.Uint16(b[2:]))
		s.Imm = int32(binary.LittleEndian.Uint32(b[4:]))
		s.Imm64 = uint64(int64(s.Imm))
		if s.Op == OpLdDW && i+1 < len(slots) {
			s.Imm64 = uint64(uint32(s.Imm)) | uint64(binary.LittleEndian.Uint32(raw[(i+1)*SlotSize+4:]))<<32
			i++
		}
	}
	return slots
}

// MemSize is the access size in bytes of a load, store or atomic opcode.
func MemSize(op uint8) int { return [4]int{4, 2, 1, 8}[op>>3&3] }
