package heap

import (
	"sync/atomic"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The owner table, at Layout.OwnerOff, has one OwnerRecordSize-byte record per
// attached process (mcs.Attach claims one and registers its liveness word with
// the kernel):
//
//	offset 0   robust  u64  robust-list entry: next pointer, in the owner's own view
//	offset 8   live    u32  liveness word, a robust futex: the TID of the process's
//	                        designated thread; the kernel sets FUTEX_OWNER_DIED
//	                        (0x40000000) in it when that process dies
//	offset 12  pid     u32
//	offset 16  gen     u32  bumped on every attach to the slot
//	offset 24  since   u64  attach time, Unix nanoseconds
//
// A free slot has live == 0. A slot whose live word has OWNER_DIED set belongs
// to a dead process: it stays reserved until what it held is recovered. The
// layout is here, below the lock, because the allocator's own locks need to
// know whether their holder lives.
const (
	OwnerRobust = 0
	OwnerLive   = 8
	OwnerPID    = 12
	OwnerGen    = 16
	OwnerSince  = 24
)

// OwnerRecord is the heap offset of field (one of the Owner constants) of owner
// slot s's record.
func (h *Heap) OwnerRecord(s uint32, field uint64) uint64 {
	return h.hdr.OwnerOff + uint64(s)*OwnerRecordSize + field
}

// OwnerLiveness reads owner slot s: its liveness word and its generation.
func (h *Heap) OwnerLiveness(s uint32) (live, gen uint32) {
	return atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, OwnerLive))), atomic.LoadUint32(h.Uint32(h.OwnerRecord(s, OwnerGen)))
}

// OwnerDead reports whether the occupant of slot s is known to be dead: the
// kernel marked its liveness word.
func OwnerDead(live uint32) bool { return live&futex.OwnerDied != 0 }
