// Package verifier proves that an extension uses kflex's interface correctly
// and finds the memory accesses that need no guard. As in the KFlex design, it
// does not prove heap safety: heap accesses are never rejected for their
// address, they are guarded (masked into the sandbox) unless the analysis
// shows the guard is redundant.
//
// Layer 2 (mcs, verifier): it stands on bytecode alone.
//
// The analysis is abstract interpretation to a fixpoint over the CFG
// (cfg.go), with one joined state per join point (where paths meet; every
// other instruction has one predecessor, whose states it steps on as they
// come, keeping none: verify.go), so memory grows with the join points, and
// a state reaching a join point that its joined state already covers stops
// there (subsumption). In a state (state.go) each register is
// uninitialised, a number (a tnum, tnum.go, and four intervals: unsigned and
// signed, on 64 bits and on the low 32, bounds.go; every ALU operation keeps
// what it can of them, alubounds.go, and every conditional jump narrows both
// operands on both sides, refine.go),
// the context or the frame pointer plus a constant, or a mix of pointers;
// the frame's bytes are initialised or not. Numbers that are heap pointers
// may be checked: known to lie in the sandbox, moved by a range of offsets,
// because an earlier access sanitized them in place, because the engine put
// them there (the pointer argument in r3, Config.EntryArg), or because a
// helper returned them (Helper.HeapOrNull, past a test against 0). An access
// through a checked pointer that stays within reach of the 64 KiB guard
// regions needs no guard.
//
// Per memory instruction the Result says how it reaches memory (Access): the
// stack or the context (in bounds, unguarded), the heap guarded, the heap
// sanitizing its base register in place (only where a later access profits),
// or the heap through a checked pointer (unguarded).
//
// Helper calls are checked against prototypes (Config.Helpers: which
// registers each reads, and of those, which take a number, refusing the
// engine's context and frame pointers, or a number proven not 0).
//
// Before the analysis, the call graph is checked (cfg.go: checkCalls): no
// recursion, direct or mutual, and no chain of calls deeper than
// abi.MaxFrames frames, the stack frames the engines have. After it, every
// instruction the analysis reached must be able to reach an exit of its
// subprogram along the graph: one that cannot is in an endless loop, which no
// run leaves but by cancellation. A loop with a way out (a conditional
// back-edge, a may_goto) is accepted, bounded or not.
//
// Locks taken through the lock subprogram (Config.LockFunc, kflex's
// mcs_lock) are counted per frame: a subprogram returns holding what it took,
// never releases more, and reaches each instruction holding the same number on
// every path. Result.CancelTable says how many are held at each cancellation
// point (back-edges and helper calls), and which callee-saved register keeps
// each one's address (the one r1 was copied from for the lock call, while
// neither changed; an access that sanitizes it in place leaves it naming the
// same heap word), for the runtime to release them when it stops the
// program there. Result.CallTable says the same of every bpf-to-bpf call
// site: what the caller holds while the callee runs (points.go). A program
// stopped in a subprogram holds what its frame's cancellation point lists
// and what each caller's call site lists; Result.HeldAt finds either by
// slot. Stack slots are never named for locks: frames live in the sandbox,
// where a spilled address can be forged.
//
// Allocations (abi.HelperAlloc's results) are references, as the kernel
// tracks acquired ones (refs.go). One is published when the program passes
// it to the free helper (abi.HelperFree), stores it anywhere but its own
// frame's stack (through a heap pointer, or into the context), or returns it
// in r0 from the main program's exit; until then it is unpublished, held by
// its frame, and every CancelPoint of that frame lists it with one place
// that keeps its pointer (a register, or an 8-byte stack slot it was stored
// to whole). A program that loses one (no register or slot keeps it), exits
// with one (a subprogram with any), or reaches a join point holding
// different ones on different paths is rejected: the lists are exact. One
// passed to a subprogram in r1-r5 becomes the callee's.
//
// Deliberate differences from the Linux verifier (kernel.TestVerifierVerdicts
// compares the two on generated programs and on mutations that break one rule
// each; every disagreement it sees is a row here):
//
//	what                          Linux                        kflex
//	heap (arena) access           checked by the JIT, faults   masked into the sandbox; never rejected
//	                              handled by exception tables
//	values reloaded from the      tracked per slot             unknown numbers: frames live in the
//	stack                                                      sandbox, where heap stores and other
//	                                                           processes can change them
//	loops                         bounded, or may_goto, or     any with a way out (an exit reachable
//	                              bpf_loop                     along the graph), its back-edge a
//	                                                           cancellation point (the engines stop
//	                                                           there on Cancel); one with no way out
//	                                                           rejected, as Linux does
//	stack of a call chain         at most 512 bytes for all    512 bytes for each frame (at most 8,
//	                              its frames together          as in Linux up to 6.18; 7.3 allows
//	                                                           16): frames are not sized
//	paths                         explored one by one with     joined where paths meet (widening by
//	                              state pruning                powers of two): one state per join
//	                                                           point, which prunes what it covers
//	bounds                        signed and unsigned, 32 and  the same four intervals and tnum; the
//	                              64 bits                      rules that narrow one by another are
//	                                                           kflex's own (bounds.go: sync), and
//	                                                           a 64-bit multiplication keeps signed
//	                                                           bounds only for operands below 2^31
//	32-bit division and modulo    the result unknown on 64     zero-extended, as every 32-bit result
//	                              bits (Linux 6.12, 6.18;
//	                              7.3 bounds it, and agrees)
//	byte swaps                    the result unknown (Linux    the tnum's bits moved with the bytes,
//	                              6.12, 6.18.15); 7.3 swaps    and the bounds narrowed by it
//	                              the tnum but not the bounds
//	acquired references           any path's leak rejected at  allocations only; a lost one rejected
//	                              exit; tracked per path       where lost, a join of paths holding
//	                                                           different ones rejected, a subprogram
//	                                                           may not return one
//	helpers, kfuncs               the kernel's prototypes      kflex's helpers (Config.Helpers); kfunc
//	                                                           calls rejected
//	callx                         rejected                     checked against every helper its
//	                                                           register may name, if at most 8
//	r2 at entry                   uninitialised                the context's length (the calling
//	                              ("R2 !read_ok")              convention of the conformance protocol)
//	r3 at entry                   not set                      the pointer argument, when EntryArg
//	uninitialised stack reads     allowed for privileged       rejected: they read whatever an earlier
//	                              programs (unknown values)    run or another process left there
//	partial reload of a spilled   rejected ("invalid size of   a number, like every stack reload
//	pointer                       register fill")
//	context size                  syscall programs: offsets    Config.CtxSize, at load; with
//	                              checked at run time against  Config.CtxFields (kflex's runtime has
//	                              the context passed in        them), whole fields, stores to
//	                                                           writable ones only
//	division or modulo by a zero  rejected ("div by zero")     runs as RFC 9669 defines it (quotient
//	immediate                                                  0, remainder the dividend)
//	a rejection's log             every state along the path   the first path that reached the
//	                              that failed                  instruction, with the joined states
//	                                                           (instructions written as Linux writes
//	                                                           them: bytecode.KernelText)
package verifier
