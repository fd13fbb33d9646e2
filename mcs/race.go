//go:build race

package mcs

import (
	"sync"
	"sync/atomic"
)

// The race detector sees no synchronisation in atomics on heap memory (it is
// mmap'd, outside the memory the detector shadows), so Go data protected by a
// heap lock would be reported as racy. Under -race each lock word gets a shadow
// word in Go memory: unlock releases on it, lock acquires from it, which gives
// the detector the happens-before edges the lock really provides. Only within
// one process: that is all the detector can see anyway.

const raceEnabled = true

var raceShadows sync.Map // lock word address -> *uint64

func raceShadow(m *Mutex) *uint64 {
	s, _ := raceShadows.LoadOrStore(m.word, new(uint64))
	return s.(*uint64)
}

func raceAcquire(m *Mutex) { atomic.LoadUint64(raceShadow(m)) }
func raceRelease(m *Mutex) { atomic.AddUint64(raceShadow(m), 1) }
