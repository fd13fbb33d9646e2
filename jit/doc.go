// Package jit compiles eBPF programs to amd64 machine code and runs them inside
// a Go process; on other architectures it is unavailable (Supported says why)
// and callers use jit/interp, the oracle it is tested against.
//
// Layer 4 (jit): it stands on the interpreter, the code generator and bytecode.
//
// # Memory
//
// A Machine owns a sandbox: a region of 2^k bytes at an address aligned to its
// size, with 64 KiB of scratch memory on both sides. The program's stack
// (abi.MaxFrames frames of abi.StackSize bytes) and a copy of its context live in the sandbox, and every
// load, store and atomic is guarded: the address is masked into the sandbox
// (and with size-1, add the base) before the access, so no address a program
// computes can fault or reach Go's memory. Until the verifier proves accesses in
// bounds, every access is guarded, except those through r10: it is read-only
// and its frames lie inside the sandbox, within 32 KiB of nothing but sandbox
// and guard memory. A stray access reads or writes somewhere in the sandbox,
// where the interpreter would stop with an error.
//
// # Running native code from Go
//
// Generated code never calls Go. It runs between two points of the assembly
// trampoline (trampoline_amd64.s): entry loads the eBPF registers from the
// execution context (mmap'd memory, invisible to the garbage collector) and
// calls the resume address; every exit stores them back with an exit code and
// returns. The Go loop in Run serves the exit — a helper call, an exhausted
// budget, a cancellation, the program's end — and re-enters. Back-edges count
// down a budget, so native code returns to Go at least every abi.BackEdgeBudget
// loop iterations and never holds up the scheduler or the garbage collector
// for long; back-edges and helper calls also test the terminate word, which
// any thread may set (abi.ErrCancelled). Registers at entry, the stack and the
// budgets are abi's, as in the interpreter.
//
// CompileProgram compiles a bytecode.Program, validated once, with the
// verifier's guard choices (loader does both); Compile and CompileWith
// validate instructions first.
package jit
