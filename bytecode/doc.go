// Package bytecode reads and writes eBPF bytecode: the 8-byte instruction slots
// of RFC 9669, as github.com/cilium/ebpf/asm instructions — kflex's only
// instruction type.
//
// Layer 1 (heap, translate, rseq, bytecode): it imports no kflex package; the
// verifier and the engines stand on it.
//
// Decode and Encode are exact inverses on every well-formed program: Encode(Decode(b))
// returns b byte for byte. Encode exists because asm.Instructions.Marshal (v0.22.0)
// loses two fields: it writes 0 as the immediate of every atomic instruction (so a
// compare-and-exchange reaches the kernel as a plain add), and it clears the offset
// of ALU instructions other than sdiv, smod and movsx (so addr_space_cast, a mov with
// offset 1, cannot be written). Both are covered by tests that show the difference;
// once cilium/ebpf is fixed, Encode can defer to Marshal.
//
// Validate checks what any executor needs before running a program: known
// opcodes, registers in range, reserved fields zero, jump and call targets on an
// instruction start, and a last instruction that does not fall through. A
// Program is a program validated and encoded once (NewProgram, DecodeProgram):
// the one form the verifier, the JIT and the interpreter read, none of which
// validates it again. Assemble turns the text form used by kflex's ISA tests
// into instructions.
package bytecode
