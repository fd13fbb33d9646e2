package mcs

// The lock word is 64 bits in the heap, 8-byte aligned. Every executor (Go code
// here; the interpreter, the JIT and kernel BPF programs later) follows this
// layout byte for byte:
//
//	bit  0       locked: somebody holds the lock
//	bit  1       owner died: reserved for recovery of a lock whose holder died
//	bit  2       head sleeping: the queue's head waiter is off CPU (parked, or
//	             granted the head position while parked and not yet running).
//	             While it is set, a newcomer may take a free lock ahead of the
//	             queue; once the head runs it clears the bit and nobody barges.
//	bit  3       wake pending: someone has already issued the futex wake for the
//	             sleeping head; later unlocks need not repeat it
//	bits 16-31   owner: the holder's process slot + 1 (0 when free)
//	bits 32-63   tail: index + 1 of the last queued node (0: no queue)
//
// The low 32 bits (the first four bytes, little-endian) are a futex word: the
// head waiter sleeps on them while the lock is held. The tail is an index, not a
// pointer, so every view of the heap, and the kernel's, reads the same value.
const (
	wordLocked       = 0x1
	wordOwnerDied    = 0x2
	wordHeadSleeping = 0x4
	wordWakePending  = 0x8
	wordOwnerShift   = 16
	wordOwnerMask    = 0xffff << wordOwnerShift
	wordTailShift    = 32
	wordTailMask     = 0xffffffff << wordTailShift
)

func wordTail(w uint64) uint32  { return uint32(w >> wordTailShift) }
func wordOwner(w uint64) uint32 { return uint32(w&wordOwnerMask) >> wordOwnerShift }

// held is the word bits a holder in process slot s sets.
func held(slot uint32) uint64 { return wordLocked | uint64(slot+1)<<wordOwnerShift }

// canBarge reports whether a newcomer may take the lock in state w: it is free,
// and there is no queue, or the queue's head is off CPU (so the lock would sit
// idle while the head wakes up).
func canBarge(w uint64) bool {
	return w&wordLocked == 0 && (w&wordTailMask == 0 || w&wordHeadSleeping != 0)
}
