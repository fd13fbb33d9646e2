package mcs

import (
	"sync/atomic"
	"time"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// Way is how a Go waiter's park ended, and how a waiter learned of a death it
// acted on (a lock taken over from a dead holder, a queue repaired around a
// dead waiter): the first look after a park counts that park's ending; every
// other look is Polled. A death seen after ParkTimeout is a wake that never
// came.
type Way int

const (
	Polled      Way = iota // a read of the liveness word while spinning, on arrival, or in HelperLockCheck
	DeathWake              // a wake on the liveness word: the kernel's at the death, or a waiter passing it on
	OwnWake                // a wake on the waiter's own word (the lock word, its node's state)
	ParkTimeout            // the park's timeout
	NoSleep                // no sleep: a word had changed already, or the party was seen dead first
	Interrupted            // a signal
	NumWays
)

var wayNames = [NumWays]string{"polled", "death_wake", "own_wake", "timeout", "no_sleep", "interrupted"}

// String is the way's name as figures use it (recovery.go_seen_<name>).
func (w Way) String() string {
	if w < 0 || w >= NumWays {
		return "unknown"
	}
	return wayNames[w]
}

// WaitStats counts how this process's Go waiters ended their parks (Parks)
// and how its waiters, Go and bytecode, learned of the deaths they acted on
// (Seen), by Way. Parks[Polled] is always 0.
type WaitStats struct {
	Parks [NumWays]uint64
	Seen  [NumWays]uint64
	// LastWake is when the latest park that slept ended (zero if none has).
	LastWake time.Time
	// LastDeath is when a waiter of this process last acted on a death (zero
	// if none has): for a takeover, the moment the waiter had the lock.
	LastDeath time.Time
}

// Sub is s minus an earlier snapshot: what happened between the two.
func (s WaitStats) Sub(before WaitStats) WaitStats {
	for i := range s.Parks {
		s.Parks[i] -= before.Parks[i]
		s.Seen[i] -= before.Seen[i]
	}
	return s
}

// epoch is the origin of waitCounts.lastWake: a monotonic clock reading.
var epoch = time.Now()

// waitCounts is a process's WaitStats as it counts them. Only the wait paths
// count, never the fast paths.
type waitCounts struct {
	parks, seen [NumWays]atomic.Uint64
	lastWake    atomic.Int64 // since epoch, ns; 0: never
	lastDeath   atomic.Int64 // since epoch, ns; 0: never
}

// parked counts a park that ended the way how.
func (c *waitCounts) parked(how Way) {
	if how != NoSleep {
		c.lastWake.Store(int64(time.Since(epoch)))
	}
	c.parks[how].Add(1)
}

// WaitStats returns this process's counts so far.
func (p *Process) WaitStats() WaitStats {
	var s WaitStats
	for i := range s.Parks {
		s.Parks[i] = p.counts.parks[i].Load()
		s.Seen[i] = p.counts.seen[i].Load()
	}
	s.LastWake = sinceEpoch(p.counts.lastWake.Load())
	s.LastDeath = sinceEpoch(p.counts.lastDeath.Load())
	return s
}

// sinceEpoch is the time d ns after epoch, or the zero time for 0 (never).
func sinceEpoch(d int64) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return epoch.Add(time.Duration(d))
}

// sawDeath counts a death acted on, learned the way how.
func (p *Process) sawDeath(how Way) {
	p.counts.lastDeath.Store(int64(time.Since(epoch)))
	p.counts.seen[how].Add(1)
}

// parkWay is the Way of futex.WaitAny's result r for a sleep on a waiter's
// own word (index 0) and a liveness word (index 1).
func parkWay(r int) Way {
	switch r {
	case 0:
		return OwnWake
	case 1:
		return DeathWake
	case futex.TimedOut:
		return ParkTimeout
	case futex.Changed:
		return NoSleep
	}
	return Interrupted
}
