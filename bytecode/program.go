package bytecode

import (
	"slices"

	"github.com/cilium/ebpf/asm"
)

// Program is a validated program in every form its consumers read: the
// instructions, their encoding and its slots. It is made once (NewProgram,
// DecodeProgram), after which the verifier annotates it and the JIT and the
// interpreter compile it without validating or encoding it again. It is
// immutable and may be shared.
type Program struct {
	insns asm.Instructions
	raw   []byte
	slots []Slot
	start []int // by instruction: its first slot
}

// NewProgram validates insns and encodes them. The Program keeps a copy.
func NewProgram(insns asm.Instructions) (*Program, error) {
	if err := Validate(insns); err != nil {
		return nil, err
	}
	raw, err := Encode(insns)
	if err != nil {
		return nil, err
	}
	return newProgram(slices.Clone(insns), raw), nil
}

// DecodeProgram decodes raw bytecode and validates it.
func DecodeProgram(raw []byte) (*Program, error) {
	insns, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	if err := Validate(insns); err != nil {
		return nil, err
	}
	return newProgram(insns, slices.Clone(raw)), nil
}

func newProgram(insns asm.Instructions, raw []byte) *Program {
	start, _ := Slots(insns)
	return &Program{insns: insns, raw: raw, slots: DecodeSlots(raw), start: start}
}

// Instructions are the program's instructions. The caller must not change
// them.
func (p *Program) Instructions() asm.Instructions { return p.insns }

// Raw is the program's encoding. The caller must not change it.
func (p *Program) Raw() []byte { return p.raw }

// Slots are the program's decoded slots (an lddw's second is a zero Slot).
// The caller must not change them.
func (p *Program) Slots() []Slot { return p.slots }

// Starts gives, for each instruction, the index of its first slot. The
// caller must not change it.
func (p *Program) Starts() []int { return p.start }

// Len is the number of slots.
func (p *Program) Len() int { return len(p.slots) }
