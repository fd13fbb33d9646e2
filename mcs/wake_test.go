package mcs

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The death's wake. At a process's death the kernel marks its liveness word
// and wakes one sleeper on it, the first queued. Others may sleep on the same
// word (heads of other locks it held, waiters behind its other nodes): the
// one woken must wake them, whatever it does next. The tests here stand a
// second owner slot of this process in for the process that dies and report
// its death as the kernel does, so that who sleeps where, and which sleeper
// the wake reaches, is fixed.

// deadSlot is a second attachment of this process, whose death is emulated.
type deadSlot struct{ p *Process }

func (w *world) deadSlot(t *testing.T) deadSlot {
	t.Helper()
	p, err := Attach(w.h)
	require.NoError(t, err)
	t.Cleanup(func() { p.Detach() })
	return deadSlot{p}
}

// die does what the kernel does at the death of the slot's process: mark its
// liveness word (keeping FUTEX_WAITERS) and wake one sleeper on it.
func (d deadSlot) die(t *testing.T) {
	t.Helper()
	lw := d.p.liveWord(d.p.slot)
	v := atomic.OrUint32(lw, futex.OwnerDied)
	require.NotZero(t, v&futex.Waiters, "nobody sleeps on the liveness word")
	n, err := futex.Wake(lw, 1)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the death's wake woke nobody")
}

// asleepOn waits until the lock word at off says its head is off CPU, and
// then a while, for it to be asleep in the kernel.
func (w *world) asleepOn(t *testing.T, off uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).HeadSleeping },
		10*time.Second, 100*time.Microsecond)
	time.Sleep(20 * time.Millisecond)
}

// within is the result of a waiter that must come before its park ends.
func within(t *testing.T, done chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("waiter not woken after %v: the death's wake was lost", d)
		return nil
	}
}

// TestDeathWakePassedOn: the dying process holds locks 1 and 2; A, head of
// lock 1, sleeps first, then B, head of lock 2, both on its liveness word.
// The process releases lock 1 and dies before A runs: a sleeper woken on its
// own word stays queued on the liveness word until it runs, so the death's
// one wake reaches A, which has nothing to repair (lock 1 is free). (The
// release's own wake is left out here, so that A is still queued on both
// words when the death's wake comes: the same state.) B must be woken at
// once, not at the end of its park; before A passed the wake on, B slept
// through it.
func TestDeathWakePassedOn(t *testing.T) {
	w := newWorld(t, 1<<20)
	w.p.park = time.Minute // a lost wake shows as a waiter that never comes
	d := w.deadSlot(t)
	offs := w.locks(t, 2)
	for _, off := range offs {
		require.NoError(t, mutex(t, d.p, off).Lock())
	}
	var seqA, seqB []int
	doneA := lockAsync(mutex(t, w.p, offs[0]), &seqA, 1)
	w.asleepOn(t, offs[0])
	doneB := lockAsync(mutex(t, w.p, offs[1]), &seqB, 2)
	w.asleepOn(t, offs[1])

	before := w.p.WaitStats()
	word := w.h.Uint64(offs[0])
	v := atomic.LoadUint64(word)
	require.True(t, atomic.CompareAndSwapUint64(word, v, v&^wordHeldMask|wordWakePending)) // released, its wake issued
	d.die(t)

	require.NoError(t, within(t, doneA, 5*time.Second))
	require.ErrorIs(t, within(t, doneB, 5*time.Second), ErrOwnerDied)
	s := w.p.WaitStats().Sub(before)
	assert.Equal(t, uint64(2), s.Parks[DeathWake], "A's park and B's ended by a wake on the liveness word: %+v", s)
	assert.Equal(t, uint64(1), s.Seen[DeathWake], "B's takeover, right after its wake: %+v", s)
	assert.Zero(t, s.Parks[ParkTimeout], "%+v", s)
	assert.Zero(t, atomic.LoadUint32(d.p.liveWord(d.p.slot))&futex.Waiters, "the wake passed on clears FUTEX_WAITERS")
}

// TestReapWakes: the death's wake went to a sleeper that has not run yet
// (left out here), and Reap frees the dead process's slot before that
// sleeper passes the wake on: it then finds the word free and cannot tell
// that others sleep on it. Reap must wake them: H, head of a lock the dead
// process holds, takes it over at once.
func TestReapWakes(t *testing.T) {
	w := newWorld(t, 1<<20)
	w.p.park = time.Minute
	d := w.deadSlot(t)
	off := w.locks(t, 1)[0]
	require.NoError(t, mutex(t, d.p, off).Lock())
	var seq []int
	done := lockAsync(mutex(t, w.p, off), &seq, 1)
	w.asleepOn(t, off)
	atomic.OrUint32(d.p.liveWord(d.p.slot), futex.OwnerDied)
	require.Equal(t, 1, Reap(w.h))
	require.ErrorIs(t, within(t, done, 5*time.Second), ErrOwnerDied)
}
