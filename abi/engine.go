package abi

import "errors"

// The registers at entry. The rest are 0.
const (
	RegCtx    = 1  // the context's address (0 without one)
	RegCtxLen = 2  // the context's length in bytes
	RegArg    = 3  // the context's first word as a heap address (EntryArg)
	RegFP     = 10 // the frame pointer: the top of the first stack frame
)

// EntryArg is r3 at entry for a context whose first word is first, on a heap
// of mask+1 bytes at base (in the engine's view): first masked into the heap,
// whatever view it was in. No program can forge it, so the verifier takes it
// as a checked pointer (verifier.Config.EntryArg). Without a heap or a word
// of context, r3 is 0.
func EntryArg(first, base, mask uint64) uint64 { return base + first&mask }

// The stack: each frame (the main program's, and one per bpf-to-bpf call) has
// StackSize bytes below its frame pointer.
const (
	StackSize = 512
	MaxFrames = 8 // the main program and up to seven nested calls
)

// BackEdgeBudget is how many backward jumps a run takes between returns to Go
// (the JIT) or yields to the scheduler (the interpreter), where the terminate
// word is also read: a program spinning on a lock must leave the CPU to the
// goroutine that holds it, and native code cannot be preempted.
const BackEdgeBudget = 1 << 16

// MayGotoBudget is how many may_goto instructions fall through in one run
// before one is taken: the bound the kernel used before it became timed
// (BPF_MAX_LOOPS).
const MayGotoBudget = 8 << 20

// The terminate word is a 32-bit word the engine reads at cancellation points
// (back-edges and helper calls): set to Terminate by any goroutine or
// process, it stops the run with ErrCancelled. It stays set until its owner
// clears it (the engines' ClearCancel): a cancel that comes before the run
// it aims at starts is not lost.
const Terminate uint32 = 1

// ErrCancelled stops a program whose terminate word was set; the error an
// engine returns wraps it and names the cancellation point.
var ErrCancelled = errors.New("cancelled")

// ErrNotSupported is wrapped, with what is missing, by errors about a feature
// this machine, kernel or process lacks: the JIT on another architecture, a
// BPF arena, rseq's time-slice extension.
var ErrNotSupported = errors.New("not supported")
