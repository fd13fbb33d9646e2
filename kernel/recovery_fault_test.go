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
	n := w.p.TakeNode()
	defer w.p.GiveNode(n)
	tail := func() uint32 { return uint32(atomic.LoadUint64(w.h.Uint64(off)) >> 32) }

	c := w.startArenaChild(t, off, "KFLEX_FAULT="+mcs.FaultSwapped)
	require.NoError(t, mu.Lock())
	result := make(chan int32, 1)
	go func() {
		runtime.LockOSThread() // the node is this thread's
		defer runtime.UnlockOSThread()
		result <- run(t, hold, w.ctx(off, n))
	}()
	require.True(t, spinUntil(func() bool { return tail() == n.Index+1 }, 5*time.Second), "the kernel program queued")
	queued := time.Now()
	c.proceed(t)
	// Released as soon as the child's node is the tail: the child kills
	// itself right after its swap, whether or not it is dead yet when the
	// kernel program takes the lock, it never links.
	require.True(t, spinUntil(func() bool { return tail() != n.Index+1 }, 5*time.Second), "the child swapped in behind the kernel program")
	mu.Unlock()
	t.Logf("the lock released %v after the kernel program queued", time.Since(queued))
	<-c.done
	ws, _ := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the child died at its fault point: %v", c.cmd.ProcessState)

	require.Equal(t, int32(mcs.KernelStuck), <-result, "the kernel program holds the lock and could not hand the queue on")
	t.Logf("KernelStuck %v after the kernel program queued", time.Since(queued))
	require.NoError(t, w.p.Unstick(off, n, mcs.KernelStuck))
	assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "released, the queue ended")
	assert.Equal(t, 1, mcs.Reap(w.h), "the dead child's slot is given back")

	require.NoError(t, mu.Lock(), "the lock works for Go")
	mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	require.Zero(t, run(t, counter, w.ctx(off, n)), "and for the kernel")
	assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)))
}
