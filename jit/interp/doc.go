// Package interp is kflex's portable eBPF interpreter: the reference the JIT is
// checked against, and the executor on architectures without a JIT.
//
// Layer 3 (userspace, jit/amd64, jit/interp): it stands on bytecode and abi.
//
// A Program is bytecode validated (a bytecode.Program: Prepare) and pre-decoded
// into one entry per instruction slot, so the dispatch loop does no decoding and
// no allocation. A Machine holds what one executing thread needs: its stack
// frames (abi.MaxFrames of abi.StackSize bytes), the memory regions a program
// may touch (its stack, its context, and the heap when one is attached), and
// the helpers it may call. Every load and store is checked
// against those regions; an access outside them, a call to a missing helper, a
// call chain deeper than abi.MaxFrames or running past the instruction budget
// stops the program with a *RuntimeError naming the instruction. Nothing a
// program does panics the caller.
//
// Semantics follow RFC 9669: 32-bit operations zero the upper half; shift counts
// are masked; division by zero gives 0 and modulo by zero leaves the dividend
// (its low 32 bits, for 32-bit operations); the most negative value divided by -1
// is itself and its remainder 0.
package interp
