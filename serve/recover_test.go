package serve_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
)

const (
	roleHolder  = "serve-holder"  // attaches, locks KFLEX_LOCK, says "held", waits to be killed
	roleRuntime = "serve-runtime" // a runtime invoking lockOnce on KFLEX_LOCK; says "invoking"
	roleWaiter  = "serve-waiter"  // attaches, says "locking", queues for KFLEX_LOCK, waits to be killed
	roleOnce    = "serve-once"    // attaches, says "locking", locks KFLEX_LOCK (owner died: repairs), unlocks, exits
	roleStandIn = "serve-standin" // a runtime whose lockOnce, queued on KFLEX_LOCK, is cancelled; says "standing" while the stand-in waits
	roleHolds   = "serve-holds"   // a runtime whose extension takes KFLEX_LOCK and loops; says "holding"
)

// TestRecoveryChild is the child of the recovery tests; run directly it does
// nothing.
func TestRecoveryChild(t *testing.T) {
	role := testutil.Role()
	switch role {
	case roleHolder, roleRuntime, roleWaiter, roleOnce, roleStandIn, roleHolds:
	default:
		t.Skip("child process of the recovery tests")
	}
	h, err := heap.Open(os.Getenv("KFLEX_HEAP"), nil)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() }) // after the runtime's Close, a cleanup registered later
	off := testutil.EnvUint(t, "KFLEX_LOCK")
	if role == roleHolder || role == roleWaiter || role == roleOnce {
		p, err := mcs.Attach(h)
		require.NoError(t, err)
		defer p.Detach() // before h.Close: roleOnce returns
		m, err := p.Mutex(off)
		require.NoError(t, err)
		if role != roleHolder {
			fmt.Println("locking")
		}
		if role == roleOnce {
			if err := m.Lock(); errors.Is(err, mcs.ErrOwnerDied) {
				m.Consistent()
			} else {
				require.NoError(t, err)
			}
			m.Unlock()
			return
		}
		require.NoError(t, m.Lock())
		fmt.Println("held")
		time.Sleep(time.Minute) // killed long before
		return
	}
	if role == roleHolds {
		rt := runtimeOn(t, h, map[string]string{"lockloop": lockHolding("")}, serve.Options{JIT: 1, Budget: -1})
		go rt.Invoke(context.Background(), "lockloop", h.Base()+off) // killed while it holds the lock
		require.Eventually(t, func() bool {
			return mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Owner == rt.Process().Slot()+1
		}, 20*time.Second, 100*time.Microsecond, "the extension never took the lock")
		fmt.Println("holding")
		time.Sleep(time.Minute)
		return
	}
	rt := lockRuntime(t, h, serve.Options{JIT: 1})
	if role == roleStandIn {
		standIn(t, h, rt, off)
		return
	}
	fmt.Println("invoking")
	rt.Invoke(context.Background(), "lockonce", h.Base()+off) // killed while it waits
}

// standIn is roleStandIn's body: it queues lockOnce on the lock at off,
// cancels it once its node is the queue's tail, and says "standing" when
// Invoke has returned and the node still waits, a stand-in in it
// (mcs.Process.Leave), asleep if KFLEX_PARKED is 1. It is killed long before
// its minute is up.
func standIn(t *testing.T, h *heap.Heap, rt *serve.Runtime, off uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	invoked := make(chan error, 1)
	go func() { _, err := rt.Invoke(ctx, "lockonce", h.Base()+off); invoked <- err }()
	ours := func(tail uint32) bool {
		return tail != 0 && (tail-1)/h.Header().NodesPerProc == rt.Process().Slot()
	}
	var node uint32
	require.Eventually(t, func() bool {
		node = mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Tail
		return ours(node)
	}, 20*time.Second, 100*time.Microsecond, "the extension never queued")
	cancel()
	require.ErrorIs(t, <-invoked, abi.ErrCancelled)
	require.Contains(t, []uint32{mcs.NodeWaiting, mcs.NodeParked}, rt.Process().QueueNode(node-1).State, "the cancelled executor's node still queued, stood in for")
	if os.Getenv("KFLEX_PARKED") == "1" {
		require.Eventually(t, func() bool { return rt.Process().QueueNode(node-1).State == mcs.NodeParked },
			10*time.Second, 50*time.Microsecond, "the stand-in never fell asleep")
	}
	fmt.Println("standing")
	time.Sleep(time.Minute)
}

// lockRuntime is a runtime on h running lockOnce, closed with the test.
func lockRuntime(t *testing.T, h *heap.Heap, o serve.Options) *serve.Runtime {
	o.Budget = -1 // the waits end with the recovery under test, never a budget
	return runtimeOn(t, h, map[string]string{"lockonce": mcs.LockOnceProgram}, o)
}

// recoveryWorld is a heap file with a lock word, for the recovery tests.
func recoveryWorld(t *testing.T) (*heap.Heap, string, uint64) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	path := filepath.Join(t.TempDir(), "heap")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	off, err := h.Alloc(16)
	require.NoError(t, err)
	*h.Uint64(off) = 0
	return h, path, off
}

// lockAsync locks m in a goroutine, repairs (Consistent) if its holder died,
// unlocks, and sends Lock's error.
func lockAsync(m *mcs.Mutex) chan error {
	got := make(chan error, 1)
	go func() {
		err := m.Lock()
		if errors.Is(err, mcs.ErrOwnerDied) {
			m.Consistent()
		}
		if err == nil || errors.Is(err, mcs.ErrOwnerDied) {
			m.Unlock()
		}
		got <- err
	}()
	return got
}

// heldWorld is recoveryWorld with this process attached (p) and holding the
// lock (m); live is the heap's live objects then.
func heldWorld(t *testing.T) (h *heap.Heap, path string, off uint64, p *mcs.Process, m *mcs.Mutex, live uint64) {
	h, path, off = recoveryWorld(t)
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	t.Cleanup(func() { p.Detach() }) // before recoveryWorld's h.Close
	m, err = p.Mutex(off)
	require.NoError(t, err)
	require.NoError(t, m.Lock())
	return h, path, off, p, m, h.Stats().LiveObjects
}

// startChild starts a recovery child in role, with extra environment, and
// waits for its first line.
func startChild(t *testing.T, role, path string, off uint64, first string, env ...string) *os.Process {
	cmd := testutil.Child(t, "TestRecoveryChild", role, append(env, "KFLEX_HEAP="+path, fmt.Sprintf("KFLEX_LOCK=%d", off))...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads past the first line unless it was wrong
			}
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != first {
			said := []string{l}
			for l := range lines {
				said = append(said, l)
			}
			t.Fatalf("child %s said %q first, not %q:\n%s", role, l, first, strings.Join(said, "\n"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child said nothing for 20 s")
	}
	return cmd.Process
}

// tablesSettled checks that, once reaped, only the processes in keep are
// attached and every queue node is free, and that heap.Check and
// mcs.CheckLocks find nothing wrong.
func tablesSettled(t *testing.T, h *heap.Heap, p *mcs.Process, keep int) {
	mcs.Reap(h)
	assert.Len(t, mcs.Owners(h), keep, "attached processes")
	hdr := h.Header()
	busy := 0
	for i := range hdr.MaxProcs * hdr.NodesPerProc {
		if p.QueueNode(i).State != mcs.NodeFree {
			busy++
		}
	}
	// The runtime's executors hold one node each, free while not queued.
	assert.Zero(t, busy, "queue nodes in use")
	_, err := h.Check()
	assert.NoError(t, err, "the allocator and owner table")
	assert.Empty(t, mcs.CheckLocks(h), "the node table and lock directories")
}

// TestExtensionWaitsHolderKilled: a Go holder in a child process is SIGKILLed
// while two extensions (JIT, then interpreter) wait for its lock in the
// runtime, one in each of its executors: the runtime answers meanwhile
// (Status, Running), both Invokes return, the first with the owner-died code
// and the second, after the first repaired and unlocked, plainly; the lock is
// free and usable again.
func TestExtensionWaitsHolderKilled(t *testing.T) {
	for _, o := range []serve.Options{{JIT: 2}, {Interpreted: 2}} {
		t.Run(map[bool]string{true: "jit", false: "interpreter"}[o.JIT > 0], func(t *testing.T) {
			h, path, off := recoveryWorld(t)
			rt := lockRuntime(t, h, o)
			holder := startChild(t, roleHolder, path, off, "held")
			got := make(chan int64, 2)
			tail := uint32(0)
			for range 2 {
				go func() {
					r0, err := rt.Invoke(context.Background(), "lockonce", h.Base()+off)
					assert.NoError(t, err)
					got <- int64(r0)
				}()
				tail = waitTail(t, h, off, "an extension", tail)
			}
			assert.Len(t, rt.Running(), 2, "both executors wait")
			assert.Equal(t, 2, rt.Status().Busy, "the runtime answers while both wait")
			killed := time.Now()
			require.NoError(t, holder.Signal(syscall.SIGKILL))
			var r0s []int64
			for range 2 {
				select {
				case r0 := <-got:
					r0s = append(r0s, r0)
				case <-time.After(20 * time.Second):
					t.Fatal("an Invoke still waits 20 s after the holder died")
				}
			}
			t.Logf("SIGKILL of the holder -> both Invokes returned: %v", time.Since(killed))
			assert.ElementsMatch(t, []int64{mcs.LockOwnerDied, 0}, r0s, "one takes it over, the other then gets it plainly")
			assert.Zero(t, atomic.LoadUint64(h.Uint64(off)), "repaired and unlocked")
			r0, err := rt.Invoke(context.Background(), "lockonce", h.Base()+off)
			require.NoError(t, err)
			assert.Zero(t, r0, "the lock is usable again")
			holder.Wait()
			tablesSettled(t, h, rt.Process(), 1)
		})
	}
}

// TestRuntimeKilledWhileQueued: a runtime whose extension waits behind a live
// Go holder is SIGKILLed; after the holder unlocks, everyone can lock, and
// the dead runtime's node, slot and heap objects (executor stacks, rseq
// areas: AllocOwned) are recovered.
func TestRuntimeKilledWhileQueued(t *testing.T) {
	h, path, off, p, m, live := heldWorld(t)
	runtime := startChild(t, roleRuntime, path, off, "invoking")
	require.Eventually(t, func() bool { return atomic.LoadUint64(h.Uint64(off))>>32 != 0 },
		20*time.Second, 100*time.Microsecond, "the extension never queued")
	require.NoError(t, runtime.Signal(syscall.SIGKILL))
	runtime.Wait()
	m.Unlock()
	runtimeRecovered(t, h, p, m, off, live, 2)
}

// runtimeRecovered checks the end of a test that killed a runtime: a Go
// newcomer locks the lock at off (m, of p), the dead runtime's heap objects
// (executor stacks, rseq areas: owned objects) are back in the heap once
// reaped (live objects as before it started), an extension of a new runtime
// locks too and leaves the lock free, and keep processes are attached (that
// runtime among them), with every queue node free.
func runtimeRecovered(t *testing.T, h *heap.Heap, p *mcs.Process, m *mcs.Mutex, off, live uint64, keep int) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		err := m.Lock()
		if err == nil {
			m.Unlock()
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("a later locker hangs: word %+v", mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))))
	}
	_, err := h.Reap()
	require.NoError(t, err)
	assert.Equal(t, live, h.Stats().LiveObjects, "the dead runtime's executor stacks and rseq areas (owned objects) are back in the heap")
	rt := lockRuntime(t, h, serve.Options{JIT: 1})
	r0, err := rt.Invoke(context.Background(), "lockonce", h.Base()+off)
	require.NoError(t, err)
	assert.Zero(t, r0)
	assert.Zero(t, atomic.LoadUint64(h.Uint64(off)), "the lock is free")
	tablesSettled(t, h, p, keep)
}

// TestAbandonedBehindDead: an extension cancelled while it waits leaves its
// node abandoned in the queue; when the waiter ahead of it and the holder
// then die, the Go waiter behind it must look through the abandoned node to
// the dead ones, become the head and take the lock over (owner died), not
// wait forever for a grant nobody will give.
func TestAbandonedBehindDead(t *testing.T) {
	h, path, off := recoveryWorld(t)
	word := h.Uint64(off)
	waitTail := func(what string, from uint32) uint32 { return waitTail(t, h, off, what, from) }
	holder := startChild(t, roleHolder, path, off, "held")
	waiter := startChild(t, roleWaiter, path, off, "locking")
	qd := waitTail("the child waiter", 0)

	rt := lockRuntime(t, h, serve.Options{JIT: 1})
	invoked := make(chan error, 1)
	go func() { _, err := rt.Invoke(context.Background(), "lockonce", h.Base()+off); invoked <- err }()
	qe := waitTail("the extension", qd)

	p, err := mcs.Attach(h)
	require.NoError(t, err)
	defer p.Detach()
	m, err := p.Mutex(off)
	require.NoError(t, err)
	locked := make(chan error, 1)
	go func() { locked <- m.Lock() }()
	waitTail("the Go waiter", qe)

	require.Equal(t, 1, rt.Cancel("lockonce"))
	require.ErrorIs(t, <-invoked, abi.ErrCancelled)
	require.NoError(t, waiter.Kill())
	require.NoError(t, holder.Kill())
	select {
	case err := <-locked:
		require.ErrorIs(t, err, mcs.ErrOwnerDied)
		m.Consistent()
		m.Unlock()
	case <-time.After(10 * time.Second):
		t.Fatalf("the Go waiter behind the abandoned node never got the lock: word %#x", *word)
	}
}

// waitTail waits until the tail of the lock at off is no longer from (a
// newcomer queued) and returns it.
func waitTail(t *testing.T, h *heap.Heap, off uint64, what string, from uint32) uint32 {
	t.Helper()
	var tail uint32
	require.Eventually(t, func() bool {
		tail = mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Tail
		return tail != from
	}, 10*time.Second, 100*time.Microsecond, "%s never queued: word %#x", what, atomic.LoadUint64(h.Uint64(off)))
	return tail
}

// TestRuntimeKilledWhileStandInWaits: a runtime is SIGKILLed while a
// stand-in waits in its cancelled executor's node (mcs.Process.Leave), in
// the middle of a queue behind a live Go holder or at its tail. (A stand-in
// waits only behind a live waiter: a cancelled head hands its position on
// at once, and a stand-in that becomes the head does the same.) The
// stand-in's node is then a dead waiter's: the live waiters pass it and get
// the lock in turn (no owner died: the holder lives and unlocks), newcomers
// (Go and an extension) lock, and the dead runtime's slot, nodes and heap
// objects are recovered.
func TestRuntimeKilledWhileStandInWaits(t *testing.T) {
	for _, c := range []struct {
		name          string
		before, after int  // live Go waiters queued ahead of the stand-in, and behind it
		parked        bool // killed while the stand-in sleeps
	}{{"middle", 1, 1, false}, {"middle, parked", 1, 1, true}, {"tail, parked", 1, 0, true}, {"third of five", 2, 2, false}} {
		t.Run(c.name, func(t *testing.T) {
			h, path, off, p, m, live := heldWorld(t)
			waited := make(chan error, c.before+c.after)
			var tail uint32
			queue := func(n int) {
				for range n {
					go func() {
						err := m.Lock()
						if err == nil {
							m.Unlock()
						}
						waited <- err
					}()
					tail = waitTail(t, h, off, "a Go waiter", tail)
				}
			}
			queue(c.before)
			runtime := startChild(t, roleStandIn, path, off, "standing", fmt.Sprintf("KFLEX_PARKED=%d", map[bool]int{true: 1}[c.parked]))
			tail = mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Tail
			queue(c.after)
			require.NoError(t, runtime.Signal(syscall.SIGKILL))
			runtime.Wait()

			m.Unlock()
			for range c.before + c.after {
				select {
				case err := <-waited:
					require.NoError(t, err, "the holder lived and unlocked: no owner died")
				case <-time.After(20 * time.Second):
					t.Fatalf("a Go waiter still waits 20 s after the unlock: word %+v", mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))))
				}
			}
			runtimeRecovered(t, h, p, m, off, live, 2)
		})
	}
}

// TestRuntimeKilledHoldingLock: a runtime is SIGKILLed while its extension
// holds a lock (and loops), with a Go waiter and an extension of another
// runtime queued behind it in either order. The first of them takes the
// lock over with the owner-died result (ErrOwnerDied, or mcs_lock's
// LockOwnerDied), repairs and unlocks; the second then gets it plainly; the
// dead runtime's slot, nodes and heap objects (executor stacks, rseq areas)
// are recovered.
func TestRuntimeKilledHoldingLock(t *testing.T) {
	for _, goFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "go waiter first", false: "extension first"}[goFirst], func(t *testing.T) {
			h, path, off := recoveryWorld(t)
			rt := lockRuntime(t, h, serve.Options{JIT: 1})
			p, err := mcs.Attach(h)
			require.NoError(t, err)
			defer p.Detach()
			m, err := p.Mutex(off)
			require.NoError(t, err)
			live := h.Stats().LiveObjects
			holder := startChild(t, roleHolds, path, off, "holding")

			var locked chan error
			lockGo := func() { locked = lockAsync(m) }
			invoked := make(chan int64, 1)
			lockExt := func() {
				go func() {
					r0, err := rt.Invoke(context.Background(), "lockonce", h.Base()+off)
					assert.NoError(t, err)
					invoked <- int64(r0)
				}()
			}
			tail := mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Tail // 0: held, nobody queued
			if goFirst {
				lockGo()
				tail = waitTail(t, h, off, "the Go waiter", tail)
				lockExt()
				waitTail(t, h, off, "the extension", tail)
			} else {
				lockExt()
				tail = waitTail(t, h, off, "the extension", tail)
				lockGo()
				waitTail(t, h, off, "the Go waiter", tail)
			}
			require.NoError(t, holder.Signal(syscall.SIGKILL))
			holder.Wait()

			var goErr error
			var r0 int64
			for range 2 {
				select {
				case goErr = <-locked:
				case r0 = <-invoked:
				case <-time.After(20 * time.Second):
					t.Fatalf("a waiter still waits 20 s after the holder's runtime died: word %+v", mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))))
				}
			}
			if goFirst {
				assert.ErrorIs(t, goErr, mcs.ErrOwnerDied)
				assert.Zero(t, r0, "the Go waiter repaired the lock: the extension gets it plainly")
			} else {
				assert.Equal(t, int64(mcs.LockOwnerDied), r0)
				assert.NoError(t, goErr, "the extension repaired the lock: the Go waiter gets it plainly")
			}
			assert.Zero(t, atomic.LoadUint64(h.Uint64(off)), "the lock is free")
			runtimeRecovered(t, h, p, m, off, live, 3) // p, rt and runtimeRecovered's
		})
	}
}
