package heap

import (
	"sync/atomic"
	"time"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// A word mutex is a 32-bit word in the heap that any attached process can lock:
// 0 unlocked, 1 locked, 2 locked and somebody may sleep on it (Drepper's
// "Futexes are tricky", mutex 3). It guards the allocator's rare slow paths: page
// runs and the refill or flush of a whole batch of objects, never a single
// allocation. A holder that dies leaves it locked; recovering it is the job of
// the owner table's dead-process cleanup, not of this word.

// sleepTimeout bounds each futex sleep, so a lost wake-up costs latency only.
const sleepTimeout = 10 * time.Millisecond

func lockWord(w *uint32) {
	if atomic.CompareAndSwapUint32(w, 0, 1) {
		return
	}
	for range 64 {
		if atomic.LoadUint32(w) == 0 && atomic.CompareAndSwapUint32(w, 0, 1) {
			return
		}
	}
	for atomic.SwapUint32(w, 2) != 0 {
		futex.Wait(w, 2, sleepTimeout)
	}
}

func unlockWord(w *uint32) {
	if atomic.SwapUint32(w, 0) == 2 {
		futex.Wake(w, 1)
	}
}
