package jit

import (
	"fmt"
	"io"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/arch/x86/x86asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
)

// Listing writes the machine code generated for insns, each eBPF instruction
// (in the text of Linux's verifier log, as kflex's verifier logs it:
// bytecode.KernelLine, helpers named by abi.Prototypes; a subprogram's
// symbol on a line of its own) followed by its amd64 instructions, then the
// out-of-line exits.
func Listing(w io.Writer, insns asm.Instructions, g Guard) error {
	p, err := bytecode.NewProgram(insns)
	if err != nil {
		return err
	}
	slots := p.Slots()
	text, starts, err := compileWithMap(slots, g)
	if err != nil {
		return err
	}
	helpers := abi.Prototypes()
	helper := func(id int32) string { return helpers[id].Name }
	slot := 0
	for _, ins := range insns {
		if sym := ins.Symbol(); sym != "" {
			fmt.Fprintf(w, "%s:\n", sym)
		}
		fmt.Fprintf(w, "  %s\n", bytecode.KernelLine(slot, slots[slot], helper))
		next := slot + int(ins.Width())
		if err := disasm(w, text, starts[slot], starts[next]); err != nil {
			return err
		}
		slot = next
	}
	fmt.Fprintln(w, "      ; exits and the shared exit path")
	return disasm(w, text, starts[slot], len(text))
}

func disasm(w io.Writer, text []byte, from, to int) error {
	for pc := from; pc < to; {
		inst, err := x86asm.Decode(text[pc:to], 64)
		if err != nil {
			return fmt.Errorf("disassemble at %#x: %w", pc, err)
		}
		fmt.Fprintf(w, "      %06x  %-24x  %s\n", pc, text[pc:pc+inst.Len], x86asm.IntelSyntax(inst, uint64(pc), nil))
		pc += inst.Len
	}
	return nil
}
