package mcs

// The lock word is 64 bits in the heap, 8-byte aligned. Every executor (Go code
// here; the interpreter, the JIT and kernel BPF programs later) follows this
// layout byte for byte:
//
//	bit  0       locked: somebody holds the lock
//	bit  1       owner died: the lock was taken over from a holder that died
//	             (the new holder's Lock returned ErrOwnerDied; mcs_lock
//	             LockOwnerDied). Held with it, the data may need repair:
//	             Consistent clears it. Free with it (locked clear), the lock
//	             is not recoverable: its holder unlocked without Consistent,
//	             and every lock call fails (ErrNotRecoverable, LockNotRecoverable)
//	bit  2       head sleeping: the queue's head waiter is off CPU (parked, or
//	             granted the head position while parked and not yet running).
//	             While it is set, a newcomer may take a free lock ahead of the
//	             queue; once the head runs it clears the bit and nobody barges.
//	bit  3       wake pending: someone has already issued the futex wake for the
//	             sleeping head; later unlocks need not repeat it
//	bits 4-15    generation: the low 12 bits of the holder's owner record's gen
//	             (bumped on every attach to the slot), so that a process that
//	             reuses a dead holder's slot is not mistaken for it
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
	wordGenShift     = 4
	wordGenMask      = 0xfff << wordGenShift
	wordOwnerShift   = 16
	wordOwnerMask    = 0xffff << wordOwnerShift
	wordTailShift    = 32
	wordTailMask     = 0xffffffff << wordTailShift
	// wordHeldMask is the bits held sets: who holds the lock.
	wordHeldMask = wordLocked | wordGenMask | wordOwnerMask
	// wordHeadBits describe the queue's head, and are cleared by whoever
	// takes the head position or the lock.
	wordHeadBits = wordHeadSleeping | wordWakePending
)

func wordTail(w uint64) uint32  { return uint32(w >> wordTailShift) }
func wordOwner(w uint64) uint32 { return uint32(w&wordOwnerMask) >> wordOwnerShift }
func wordGen(w uint64) uint32   { return uint32(w&wordGenMask) >> wordGenShift }

// held is the word bits a holder in process slot s, attached as generation
// gen of that slot, sets.
func held(slot, gen uint32) uint64 {
	return wordLocked | uint64(gen&0xfff)<<wordGenShift | uint64(slot+1)<<wordOwnerShift
}

// canBarge reports whether a newcomer may take the lock in state w: it is free
// (and recoverable), and there is no queue, or the queue's head is off CPU (so
// the lock would sit idle while the head wakes up).
func canBarge(w uint64) bool {
	return w&(wordLocked|wordOwnerDied) == 0 && (w&wordTailMask == 0 || w&wordHeadSleeping != 0)
}

// notRecoverable reports whether w is a lock released with the owner-died bit
// still set: nobody may take it again.
func notRecoverable(w uint64) bool { return w&(wordLocked|wordOwnerDied) == wordOwnerDied }

// takeover is w taken over by a holder with held bits h from a holder that
// died: the owner-died bit says so, the head bits are cleared (whoever takes
// over runs, and is the head or has no queue).
func takeover(w, h uint64) uint64 { return w&^(wordHeldMask|wordHeadBits) | h | wordOwnerDied }
