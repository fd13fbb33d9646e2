package mcs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
)

// The tests here kill child processes (re-executions of the test binary,
// never this process) at points of the lock protocol, and check that the
// lock passes on, and that the node and owner tables end as they began.

const childLocker = "mcs-locker"

// Acts of a locker child (KFLEX_ACT) on the lock at KFLEX_LOCK. It prints
// "slot N" once attached, then:
const (
	actHold  = "hold"  // lock, print "held", wait to be killed
	actOnce  = "once"  // lock (waiting if need be), print "got <error>", repair, hold KFLEX_HOLD (a duration, if set), unlock, exit
	actStorm = "storm" // two goroutines run stormer until KFLEX_STOP's word is set
)

// TestLockerChild is the child of the tests here; run directly it does nothing.
func TestLockerChild(t *testing.T) {
	if testutil.Role() != childLocker {
		t.Skip("child process of the recovery tests")
	}
	_, p := childAttach(t, nil)
	fmt.Printf("slot %d\n", p.Slot())
	m := mutex(t, p, testutil.EnvUint(t, "KFLEX_LOCK"))
	switch os.Getenv("KFLEX_ACT") {
	case actHold:
		require.NoError(t, m.Lock())
		fmt.Println("held")
		time.Sleep(time.Minute) // killed long before
	case actStorm:
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				off := testutil.EnvUint(t, "KFLEX_LOCK")
				if err := stormer(p, off, testutil.EnvUint(t, "KFLEX_STOP"), off+24); err != nil {
					fmt.Println(err)
					os.Exit(3)
				}
			})
		}
		wg.Wait()
	case actOnce:
		err := m.Lock()
		fmt.Printf("got %v\n", err)
		if errors.Is(err, ErrOwnerDied) {
			m.Consistent()
		}
		if hold := os.Getenv("KFLEX_HOLD"); hold != "" {
			d, err := time.ParseDuration(hold)
			require.NoError(t, err)
			time.Sleep(d)
		}
		if !errors.Is(err, ErrNotRecoverable) {
			m.Unlock()
		}
	}
}

// lockerChild is a running locker child.
type lockerChild struct {
	cmd   *osexec.Cmd
	lines chan string
	slot  uint32
	done  chan struct{} // closed when it has exited (cmd.ProcessState set)
}

// startLocker starts a locker child doing act on the lock at off, with
// extra environment, and waits until it has attached.
func (w *world) startLocker(t *testing.T, off uint64, act string, env ...string) *lockerChild {
	t.Helper()
	cmd := testutil.Child(t, "TestLockerChild", childLocker, append(env, "KFLEX_HEAP="+w.path,
		fmt.Sprintf("KFLEX_LOCK=%d", off), "KFLEX_ACT="+act)...)
	// Our own pipe, not StdoutPipe, so that waiting for the exit (below) never
	// cuts the reading short.
	r, wr, err := os.Pipe()
	require.NoError(t, err)
	cmd.Stdout = wr
	require.NoError(t, cmd.Start())
	wr.Close()
	c := &lockerChild{cmd: cmd, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(c.kill)
	_, err = fmt.Sscanf(c.line(t), "slot %d", &c.slot)
	require.NoError(t, err)
	return c
}

// line is the child's next line of output ("" if it ended without one).
func (c *lockerChild) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-c.lines:
		return l
	case <-time.After(20 * time.Second):
		t.Fatal("child said nothing for 20 s")
		return ""
	}
}

// wait waits (boundedly) for the child to exit and returns how it did.
func (c *lockerChild) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	select {
	case <-c.done:
		return c.cmd.ProcessState
	case <-time.After(20 * time.Second):
		t.Fatal("child still running after 20 s")
		return nil
	}
}

// kill SIGKILLs the child and waits for its end.
func (c *lockerChild) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// lockAsync locks m in a goroutine; the channel gets Lock's result, after
// which the goroutine repairs (Consistent), records order in seq, and unlocks.
func lockAsync(m *Mutex, seq *[]int, id int) chan error {
	done := make(chan error, 1)
	go func() {
		err := m.Lock()
		if errors.Is(err, ErrOwnerDied) {
			m.Consistent()
		}
		if !errors.Is(err, ErrNotRecoverable) {
			*seq = append(*seq, id) // under the lock
			m.Unlock()
		}
		done <- err
	}()
	return done
}

// result waits (boundedly) for a lockAsync's result.
func result(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("waiter still waiting after 20 s")
		return nil
	}
}

// scene is a lock held by this process (m, at off) in a fresh world, with,
// if asked, a waiter of ours queued (first gets its result; it appends 1 to
// seq under the lock); tail is the lock word's tail.
type scene struct {
	w     *world
	off   uint64
	m     *Mutex
	seq   []int
	first chan error
	tail  uint32
}

func newScene(t *testing.T, ahead bool) *scene {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	s := &scene{w: w, off: off, m: mutex(t, w.p, off)}
	require.NoError(t, s.m.Lock())
	if ahead {
		s.first = lockAsync(mutex(t, w.p, off), &s.seq, 1)
		s.tail = w.queuedAfter(t, off, 0)
	}
	return s
}

// queuedAfter waits until the lock word's tail differs from tail and returns it.
func (w *world) queuedAfter(t *testing.T, off uint64, tail uint32) uint32 {
	t.Helper()
	var now uint32
	require.Eventually(t, func() bool {
		now = wordTail(atomic.LoadUint64(w.h.Uint64(off)))
		return now != tail
	}, 20*time.Second, 100*time.Microsecond, "nobody queued")
	return now
}

// settled checks the end state of a recovery test: the lock word at off is
// want, every child's process is gone from the owner table once reaped, every
// queue node is free, and this process and a new child can take the lock;
// then heap.Check and CheckLocks find nothing wrong.
func (w *world) settled(t *testing.T, off uint64, want uint64) {
	t.Helper()
	assert.Equal(t, want, atomic.LoadUint64(w.h.Uint64(off)), "lock word")
	Reap(w.h)
	assert.Equal(t, []OwnerState{{Slot: w.p.Slot(), PID: uint32(os.Getpid()), TID: Owners(w.h)[0].TID, Gen: w.p.Gen()}},
		Owners(w.h), "only this process attached")
	hdr := w.h.Header()
	for i := range hdr.MaxProcs * hdr.NodesPerProc {
		assert.Equal(t, QueueNode{}.State, w.p.QueueNode(i).State, "node %d free", i)
	}
	if want != 0 {
		return
	}
	m := mutex(t, w.p, off)
	require.NoError(t, m.Lock())
	m.Unlock()
	c := w.startLocker(t, off, actOnce)
	assert.Equal(t, "got <nil>", c.line(t))
	require.True(t, c.wait(t).Success())
	assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)))
	Reap(w.h)
	_, err := w.h.Check()
	assert.NoError(t, err, "the allocator and owner table")
	assert.Empty(t, CheckLocks(w.h), "the node table and lock directories")
}

// TestHolderKilledGoWaiter: a Go holder in a child is SIGKILLed while a Go
// waiter of this process sleeps in the queue; the waiter gets the lock with
// ErrOwnerDied within the kernel's exit path, not after a park timeout.
func TestHolderKilledGoWaiter(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	c := w.startLocker(t, off, actHold)
	require.Equal(t, "held", c.line(t))
	var seq []int
	done := lockAsync(mutex(t, w.p, off), &seq, 1)
	w.queuedAfter(t, off, 0)
	require.Eventually(t, func() bool { return DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).HeadSleeping },
		10*time.Second, 50*time.Microsecond, "the waiter, the queue's head, never fell asleep")
	killed := time.Now()
	c.kill()
	require.ErrorIs(t, result(t, done), ErrOwnerDied)
	t.Logf("SIGKILL of the holder -> waiter has the lock: %v", time.Since(killed))
	w.settled(t, off, 0)
}

// TestHolderKilledNewcomer: a lock whose holder died, with nobody waiting,
// goes to the next Lock or TryLock with ErrOwnerDied; a reused slot (a new
// attach, whose generation differs) is not mistaken for the dead holder.
func TestHolderKilledNewcomer(t *testing.T) {
	w := newWorld(t, 1<<20)
	offs := w.locks(t, 2)
	for i, off := range offs {
		c := w.startLocker(t, off, actHold)
		require.Equal(t, "held", c.line(t))
		c.kill()
		require.True(t, WaitDeath(w.h, c.slot, 5*time.Second) || slotDead(atomic.LoadUint32(w.p.liveWord(c.slot))))
		m := mutex(t, w.p, off)
		if i == 0 {
			require.ErrorIs(t, m.Lock(), ErrOwnerDied)
		} else {
			// Reap first: the slot is free, then reused by another process.
			require.Equal(t, 1, Reap(w.h))
			other, err := Attach(w.h)
			require.NoError(t, err)
			require.Equal(t, c.slot, other.Slot(), "the dead holder's slot, reused")
			ok, err := m.TryLock()
			require.True(t, ok)
			require.ErrorIs(t, err, ErrOwnerDied)
			require.NoError(t, other.Detach())
		}
		assert.True(t, DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).OwnerDied)
		m.Consistent()
		m.Unlock()
		w.settled(t, off, 0)
	}
}

// TestNotRecoverable: a lock taken over from a dead holder and unlocked
// without Consistent fails every later lock, queued waiters included.
func TestNotRecoverable(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	c := w.startLocker(t, off, actHold)
	require.Equal(t, "held", c.line(t))
	c.kill()
	m := mutex(t, w.p, off)
	require.ErrorIs(t, m.Lock(), ErrOwnerDied)
	var seq []int
	var dones []chan error
	tail := uint32(0)
	for i := range 2 {
		dones = append(dones, lockAsync(mutex(t, w.p, off), &seq, i))
		tail = w.queuedAfter(t, off, tail)
	}
	m.Unlock() // without Consistent
	for _, d := range dones {
		assert.ErrorIs(t, result(t, d), ErrNotRecoverable)
	}
	assert.ErrorIs(t, m.Lock(), ErrNotRecoverable)
	ok, err := m.TryLock()
	assert.False(t, ok)
	assert.ErrorIs(t, err, ErrNotRecoverable)
	assert.Empty(t, seq)
	w.settled(t, off, wordOwnerDied)
}

// TestHeadKilledWhileParked: the queue's head, in a child, is SIGKILLed while
// asleep (head-sleeping set); when the holder unlocks, the waiter behind it
// gets the lock, and no flag the dead head set survives it.
func TestHeadKilledWhileParked(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	m := mutex(t, w.p, off)
	require.NoError(t, m.Lock())
	c := w.startLocker(t, off, actOnce)
	tail := w.queuedAfter(t, off, 0)
	require.Eventually(t, func() bool { return DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).HeadSleeping },
		20*time.Second, 100*time.Microsecond, "the head never slept")
	var seq []int
	done := lockAsync(mutex(t, w.p, off), &seq, 1)
	w.queuedAfter(t, off, tail)
	c.kill()
	m.Unlock()
	require.NoError(t, result(t, done))
	assert.Equal(t, []int{1}, seq)
	w.settled(t, off, 0)
}

// TestMiddleWaiterKilled: of three waiters, the middle one (a child) is
// SIGKILLed; the other two get the lock in queue order.
func TestMiddleWaiterKilled(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	m := mutex(t, w.p, off)
	require.NoError(t, m.Lock())
	var seq []int
	first := lockAsync(mutex(t, w.p, off), &seq, 1)
	tail := w.queuedAfter(t, off, 0)
	c := w.startLocker(t, off, actOnce)
	tail = w.queuedAfter(t, off, tail)
	third := lockAsync(mutex(t, w.p, off), &seq, 3)
	w.queuedAfter(t, off, tail)
	c.kill()
	m.Unlock()
	require.NoError(t, result(t, first))
	require.NoError(t, result(t, third))
	assert.Equal(t, []int{1, 3}, seq)
	w.settled(t, off, 0)
}

// TestReapAfterKills: after 16 SIGKILLed processes an 8 MiB heap still
// takes attaches: the slots of the dead are reaped.
func TestReapAfterKills(t *testing.T) {
	w := newWorld(t, 8<<20)
	off := w.locks(t, 1)[0]
	for range 16 {
		c := w.startLocker(t, off, actHold)
		require.Equal(t, "held", c.line(t))
		c.kill()
		m := mutex(t, w.p, off)
		require.ErrorIs(t, m.Lock(), ErrOwnerDied)
		m.Consistent()
		m.Unlock()
	}
	w.settled(t, off, 0)
}

// stuckHolder puts the lock at off in the state a kernel-form mcs_lock leaves
// when it returns KernelStuck: held by this process through node n, which
// queued on an empty queue and is still the tail (its successor has not
// linked yet). It returns n.
func (w *world) stuckHolder(t *testing.T, off uint64) Node {
	n := w.p.TakeNode()
	t.Cleanup(func() { w.p.GiveNode(n) })
	w.setNode(n.Index, QueueNode{State: NodeHead, Lock: off})
	atomic.StoreUint64(w.h.Uint64(off), w.p.Held()|uint64(n.Index+1)<<wordTailShift)
	return n
}

// setNode writes node idx (of any slot) as the protocol would have left it:
// q's links, lock and state, and the owner its index gives. Tests build with
// it the queues that a history of deaths and departures leaves.
func (w *world) setNode(idx uint32, q QueueNode) {
	n := w.p.node(idx)
	atomic.StoreUint32(n.next(), q.Next)
	atomic.StoreUint32(n.owner(), w.p.nodeOwner(idx+1))
	atomic.StoreUint32(n.prev(), q.Prev)
	atomic.StoreUint64(n.lock(), q.Lock)
	atomic.StoreUint32(n.state(), q.State)
}

// TestUnstick: after a kernel waiter's KernelStuck (faked here; the kernel
// package's TestKernelStuckDeadSuccessor has the real one, on an arena), Unstick hands the lock's queue on to the successor, which
// gets the lock, and releases the lock; TestKillAtEveryPoint has the case of
// a successor that died before linking itself.
func TestUnstick(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	n := w.stuckHolder(t, off)
	c := w.startLocker(t, off, actOnce)
	w.queuedAfter(t, off, n.Index+1)
	require.Eventually(t, func() bool { return w.p.QueueNode(n.Index).Next != 0 }, 20*time.Second, 100*time.Microsecond)
	require.NoError(t, w.p.Unstick(off, n, KernelStuck))
	assert.Equal(t, "got <nil>", c.line(t))
	require.True(t, c.wait(t).Success())
	assert.Error(t, w.p.Unstick(off, n, KernelTimedOut))
	w.settled(t, off, 0)
}

// TestHeldByNobody: a lock word that reads held but names no process (owner
// 0, or a slot beyond the owner table: garbage, since every executor's held
// bits name its slot) is taken over with the owner-died result, by a
// newcomer, by a waiter queued when the word went bad, and by an extension,
// instead of everyone waiting for a release that never comes.
func TestHeldByNobody(t *testing.T) {
	w := newWorld(t, 1<<20)
	for _, bad := range []uint64{wordLocked, wordLocked | 5<<wordGenShift, wordLocked | uint64(w.h.Header().MaxProcs+1)<<wordOwnerShift} {
		t.Run(fmt.Sprintf("%#x", bad), func(t *testing.T) {
			off := w.locks(t, 1)[0]
			word := w.h.Uint64(off)
			m := mutex(t, w.p, off)

			var seq []int
			atomic.StoreUint64(word, bad)
			require.ErrorIs(t, result(t, lockAsync(m, &seq, 0)), ErrOwnerDied, "a newcomer")
			require.Zero(t, atomic.LoadUint64(word), "repaired and unlocked")

			require.NoError(t, m.Lock())
			done := lockAsync(mutex(t, w.p, off), &seq, 1)
			w.queuedAfter(t, off, 0)
			for { // the held bits go bad under the queue
				v := atomic.LoadUint64(word)
				if atomic.CompareAndSwapUint64(word, v, v&^wordHeldMask|bad) {
					break
				}
			}
			require.ErrorIs(t, result(t, done), ErrOwnerDied, "the queued waiter")
			require.Zero(t, atomic.LoadUint64(word), "repaired and unlocked, the queue gone with it")

			if err := jit.Supported(); err != nil {
				t.Skipf("the extension's part skipped: %v", err)
			}
			jp, _ := compileBoth(t, LockOnceProgram)
			atomic.StoreUint64(word, bad)
			select {
			case r0 := <-w.runExtension(t, jp, off):
				assert.Equal(t, int64(LockOwnerDied), r0, "an extension")
			case <-time.After(20 * time.Second):
				t.Fatalf("the extension still waits 20 s later: word %+v", DecodeWord(atomic.LoadUint64(word)))
			}
			assert.Zero(t, atomic.LoadUint64(word), "repaired and unlocked")
		})
	}
}
