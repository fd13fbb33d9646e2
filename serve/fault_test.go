//go:build kflexfault

package serve_test

import (
	"context"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
)

// TestHolderCancelledAwaitingLink: an extension that has just taken a lock
// inside mcs_lock, and waits there for its successor to link itself (the
// @link loop: HelperLockCheck with held bits 0), is cancelled. The successor
// is a live child frozen between its tail swap and its link (mcs.FaultSwapped
// with the stop action). The holder's call is no cancellation point: Invoke
// goes on until the child, resumed, links; the extension grants it and stops
// at its loop, where the verifier's table names the lock, which is abandoned;
// the child takes it over and exits. Before, the cancel stopped the program
// inside mcs_lock: nothing named the lock, which stayed held by the runtime's
// live slot, and the resumed child waited for it forever.
func TestHolderCancelledAwaitingLink(t *testing.T) {
	for engine, o := range engines {
		t.Run(engine, func(t *testing.T) {
			h, path, off := recoveryWorld(t)
			o.Budget = -1 // only the cancel under test stops it
			rt := runtimeOn(t, h, map[string]string{"lockloop": holding["lockloop"]}, o)
			word := h.Uint64(off)
			state := func() mcs.LockState { return mcs.DecodeWord(atomic.LoadUint64(word)) }
			executor := rt.Process().Slot() + 1

			// The lock's first holder: Go code of a slot of its own, so that
			// the word tells it from the executor.
			p, err := mcs.Attach(h)
			require.NoError(t, err)
			t.Cleanup(func() { p.Detach() })
			m, err := p.Mutex(off)
			require.NoError(t, err)
			require.NoError(t, m.Lock())

			invoked := make(chan error, 1)
			go func() { _, err := rt.Invoke(context.Background(), "lockloop", h.Base()+off); invoked <- err }()
			require.Eventually(t, func() bool { return state().Tail != 0 },
				20*time.Second, 100*time.Microsecond, "the extension never queued")
			ext := state().Tail

			child := startChild(t, roleOnce, path, off, "locking",
				"KFLEX_FAULT="+mcs.FaultSwapped, "KFLEX_FAULT_ACTION="+mcs.FaultActionStop)
			exited := make(chan *os.ProcessState, 1)
			go func() {
				st, _ := child.Wait()
				exited <- st
			}()
			require.Eventually(t, func() bool { return state().Tail != ext && testutil.Stopped(t, child.Pid) },
				20*time.Second, 100*time.Microsecond, "the child never stopped behind the extension")
			succ := state().Tail

			m.Unlock()
			require.Eventually(t, func() bool { s := state(); return s.Locked && s.Owner == executor },
				20*time.Second, 100*time.Microsecond, "the extension never took the lock: %+v", state())

			// Waiting for the frozen child's link: cancels there change nothing.
			for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
				require.Equal(t, 1, rt.Cancel("lockloop"))
				select {
				case err := <-invoked:
					t.Fatalf("Invoke returned while its successor was stopped before linking: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			require.True(t, testutil.Stopped(t, child.Pid), "the child is still stopped")
			s := state()
			require.True(t, s.Locked && s.Owner == executor && s.Tail == succ, "the extension holds the lock: %+v", s)

			require.NoError(t, child.Signal(syscall.SIGCONT))
			select {
			case err := <-invoked:
				require.ErrorIs(t, err, abi.ErrCancelled, "stopped at the loop, past mcs_lock")
			case <-time.After(20 * time.Second):
				t.Fatalf("Invoke still runs 20 s after the child went on: word %+v", state())
			}
			select {
			case st := <-exited:
				require.True(t, st.Success(), "the child: %v", st)
			case <-time.After(5 * time.Second):
				t.Fatalf("the child never got the lock: word %+v (the extension's slot is %d)", state(), executor)
			}
			assert.Zero(t, atomic.LoadUint64(word), "the lock is free: not left held by the runtime's slot")
			assert.Zero(t, rt.Stuck(), "executors out of the pool")
			tablesSettled(t, h, rt.Process(), 2)
		})
	}
}

// TestRuntimeKilledInBytecodeLock kills a runtime inside its extension's
// mcs_lock, at each of the bytecode lock's fault points (HelperFault), with
// Go waiters of ours around it:
//
//   - swapped, behind a waiter of ours: after the tail swap, before the link
//     (the MCS window). Our waiter, once we unlock, finds the dead node
//     behind it by its prev and passes it.
//   - linked, behind a waiter of ours: linked, not yet the head.
//   - head: the queue's head, waiting for our unlock.
//   - taken: it took the lock at our unlock, and has not granted the waiter
//     behind it.
//   - granted: it took the lock and granted the waiter behind it, and has
//     not freed its node.
//
// Our waiter behind it gets the lock, taken over (owner died) where the
// runtime died holding it; the dead runtime's slot, nodes and objects are
// recovered.
func TestRuntimeKilledInBytecodeLock(t *testing.T) {
	for _, c := range []struct {
		point       string
		ahead       bool // a waiter of ours queued ahead of the extension
		afterUnlock bool // the runtime reaches its point once we unlock
		ownerDied   bool // and dies holding the lock
	}{
		{point: mcs.FaultSwapped, ahead: true},
		{point: mcs.FaultLinked, ahead: true},
		{point: mcs.FaultHead},
		{point: mcs.FaultTaken, afterUnlock: true, ownerDied: true},
		{point: mcs.FaultGranted, afterUnlock: true, ownerDied: true},
	} {
		t.Run(c.point, func(t *testing.T) {
			h, path, off, p, m, live := heldWorld(t)
			result := func(got chan error) error {
				select {
				case err := <-got:
					return err
				case <-time.After(20 * time.Second):
					t.Fatalf("a waiter still waits 20 s later: word %+v", mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))))
					return nil
				}
			}
			died := func(runtime *os.Process) {
				st, err := runtime.Wait()
				require.NoError(t, err)
				ws, _ := st.Sys().(syscall.WaitStatus)
				require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the runtime died at its extension's fault point: %v", st)
			}
			var ahead chan error
			tail, first := uint32(0), uint32(0)
			if c.ahead {
				ahead = lockAsync(m)
				first = waitTail(t, h, off, "our first waiter", 0)
				tail = first
			}
			runtime := startChild(t, roleRuntime, path, off, "invoking", "KFLEX_FAULT="+c.point)
			tail = waitTail(t, h, off, "the extension", tail)
			if !c.afterUnlock {
				died(runtime)
				switch c.point {
				case mcs.FaultSwapped:
					assert.Zero(t, p.QueueNode(first-1).Next, "our first waiter's node: nobody linked behind it")
				case mcs.FaultLinked:
					assert.Equal(t, tail, p.QueueNode(first-1).Next, "our first waiter's node: the extension linked behind it")
				}
			}
			behind := lockAsync(m)
			waitTail(t, h, off, "our waiter behind", tail)
			m.Unlock()
			if c.afterUnlock {
				died(runtime)
			}
			if ahead != nil {
				require.NoError(t, result(ahead))
			}
			if err := result(behind); c.ownerDied {
				require.ErrorIs(t, err, mcs.ErrOwnerDied)
			} else {
				require.NoError(t, err)
			}
			runtimeRecovered(t, h, p, m, off, live, 2)
		})
	}
}
