//go:build kflexfault

package kernel

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/mcs"
)

// TestKernelStuckDeadSuccessor: the KernelStuck case, in Linux. A kernel
// program queues for a lock a Go holder keeps; a child queues behind it and
// is killed between its tail swap and its link (FaultSwapped). Released, the
// lock goes to the kernel program, which then waits for its successor to link
// until may_goto's bound ends the wait: it returns KernelStuck, holding the
// lock. Unstick, from Go, finds the dead successor by its prev, skips it and
// releases the lock; the dead slot is reaped, and Go and kernel lockers both
// take the lock again. mcs's TestUnstickDeadSuccessor fakes the kernel's part.
func TestKernelStuckDeadSuccessor(t *testing.T) {
	w := newLockWorld(t)
	hold, err := LoadLockProgram(w.a, LockHold, 200*time.Millisecond)
	require.NoError(t, err)
	defer hold.Close()
	counter := w.program(t, mcs.KernelSpinTimeout)
	off, mu := w.lockPair(t)
	tail := func() uint32 { return uint32(atomic.LoadUint64(w.h.Uint64(off)) >> 32) }
	// settle ends a round that did not give KernelStuck: a Go lock repairs
	// past the dead child, Reap frees its slot, the kernel's node comes free.
	settle := func(n mcs.Node) {
		require.NoError(t, mu.Lock())
		mu.Unlock()
		assert.Equal(t, 1, mcs.Reap(w.h))
		require.Eventually(t, func() bool { return w.p.QueueNode(n.Index).State == 0 }, 5*time.Second, time.Millisecond)
		w.p.GiveNode(n)
	}

	// The child must swap in while the kernel program waits (its deadline,
	// 200 ms, is near may_goto's bound): on a loaded machine it may not,
	// and the round is run again.
	for round := 1; ; round++ {
		require.LessOrEqual(t, round, 5, "in five rounds the kernel program never got the lock with the child queued behind it")
		n := w.p.TakeNode()
		c := w.startArenaChild(t, off, "KFLEX_FAULT="+mcs.FaultSwapped)
		require.NoError(t, mu.Lock())
		type lockResult struct {
			r0  int32
			err error
		}
		result := make(chan lockResult, 1)
		go func() {
			runtime.LockOSThread() // the node is this thread's
			defer runtime.UnlockOSThread()
			r0, err := hold.Lock(w.ctx(off, n))
			result <- lockResult{r0, err}
		}()
		require.True(t, spinUntil(func() bool { return tail() == n.Index+1 }, 5*time.Second), "the kernel program queued")
		queued := time.Now()
		c.proceed(t)
		// Released as soon as another node is the tail: the child kills
		// itself right after its swap and never links, dead or not yet
		// when the kernel program takes the lock.
		// Not required: if the kernel program's deadline passed first the
		// tail may stay 0, and the round is settled below.
		spinUntil(func() bool { tl := tail(); return tl != n.Index+1 && tl != 0 }, 5*time.Second)
		mu.Unlock()
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			t.Fatal("the child did not die at its fault point within 20 s")
		}
		ws, _ := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
		require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the child died at its fault point: %v", c.cmd.ProcessState)

		var res lockResult
		select {
		case res = <-result:
		case <-time.After(20 * time.Second):
			t.Fatal("the kernel program did not return within 20 s") // may_goto bounds it to ~250 ms
		}
		require.NoError(t, res.err)
		switch r0 := res.r0; r0 {
		case mcs.KernelStuck:
			t.Logf("round %d: KernelStuck %v after the kernel program queued", round, time.Since(queued))
			require.NoError(t, w.p.Unstick(off, n, mcs.KernelStuck))
			assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "released, the queue ended")
			assert.Equal(t, 1, mcs.Reap(w.h), "the dead child's slot is given back")
			require.NoError(t, mu.Lock(), "the lock works for Go")
			mu.Unlock()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			require.Zero(t, run(t, counter, w.ctx(off, n)), "and for the kernel")
			assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)))
			w.p.GiveNode(n)
			return
		case mcs.KernelStuckUnheld: // its deadline passed as it got the lock: leaving, it could not hand on
			t.Logf("round %d: KernelStuckUnheld %v after the kernel program queued", round, time.Since(queued))
			require.NoError(t, w.p.Unstick(off, n, mcs.KernelStuckUnheld))
			settle(n)
		case mcs.KernelTimedOut:
			t.Logf("round %d: the kernel program's deadline passed %v after it queued, before the child swapped in", round, time.Since(queued))
			settle(n)
		default:
			t.Fatalf("round %d: kernel lock r0 %d", round, r0)
		}
	}
}
