package kernel

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/futex"
	"github.com/kflex-go/kflex/mcs"
)

// lockWorld is a kflex heap in a BPF arena with this process attached.
type lockWorld struct {
	a *Arena
	h *heap.Heap
	p *mcs.Process
}

func newLockWorld(t *testing.T) *lockWorld {
	requireArena(t)
	return arenaWorld(t)
}

func arenaWorld(t *testing.T) *lockWorld {
	a, err := NewArena(4 << 20)
	require.NoError(t, err)
	h, err := a.NewHeap(nil)
	require.NoError(t, err)
	return attachWorld(t, h, a)
}

// attachWorld attaches this process to h (in arena a, or nil) and closes both
// with the test.
func attachWorld(t *testing.T, h *heap.Heap, a *Arena) *lockWorld {
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Detach()
		h.Close()
		if a != nil {
			a.Close()
		}
	})
	return &lockWorld{a, h, p}
}

// program loads LockCounter for w's arena, its waits bounded by d.
func (w *lockWorld) program(t *testing.T, d time.Duration) *KernelLocker {
	p, err := LoadLockProgram(w.a, LockCounter, d)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// ctx is a lock program's context for the lock at heap offset off and node n.
func (w *lockWorld) ctx(off uint64, n mcs.Node) []byte {
	return LockArgs{Lock: w.h.Base() + off, Node: n, Held: w.p.Held(), Base: w.h.Base(),
		Table: w.h.Header().NodeOff}.Context()
}

// lockPair allocates a {lock word, counter} pair.
func (w *lockWorld) lockPair(t *testing.T) (uint64, *mcs.Mutex) {
	off, err := w.h.Alloc(16)
	require.NoError(t, err)
	clear(w.h.Bytes(off, 16))
	mu, err := w.p.Mutex(off)
	require.NoError(t, err)
	return off, mu
}

func run(t *testing.T, p *KernelLocker, ctx []byte) int32 {
	r0, err := p.Lock(ctx)
	require.NoError(t, err)
	return r0
}

// TestKernelLockUncontended: the kernel accepts the lock's kernel form and
// takes and releases a free lock, leaving the word as Go reads it.
func TestKernelLockUncontended(t *testing.T) {
	w := newLockWorld(t)
	off, mu := w.lockPair(t)
	prog := w.program(t, mcs.KernelSpinTimeout)
	n := w.p.TakeNode()
	defer w.p.GiveNode(n)
	for range 3 {
		require.Zero(t, run(t, prog, w.ctx(off, n)))
	}
	assert.Equal(t, uint64(3), *w.h.Uint64(off + 8), "counter")
	assert.Zero(t, *w.h.Uint64(off), "lock word free")
	ok, err := mu.TryLock()
	require.NoError(t, err)
	require.True(t, ok, "and Go can take it")
	mu.Unlock()
}

// TestKernelLockContended: two kernel threads (test runs from two locked OS
// threads) and four goroutines increment one counter under one lock word.
func TestKernelLockContended(t *testing.T) {
	w := newLockWorld(t)
	off, mu := w.lockPair(t)
	prog := w.program(t, mcs.KernelSpinTimeout)
	const kernelThreads, goroutines, rounds = 2, 4, 5000
	var timeouts atomic.Int64
	var wg sync.WaitGroup
	for range kernelThreads {
		n := w.p.TakeNode()
		defer w.p.GiveNode(n)
		ctx := w.ctx(off, n)
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for done := 0; done < rounds; {
				switch r := run(t, prog, ctx); r {
				case 0:
					done++
				case mcs.KernelTimedOut, mcs.KernelNodeBusy:
					timeouts.Add(1)
					time.Sleep(100 * time.Microsecond)
				default:
					t.Errorf("kernel lock: %d", r)
					return
				}
			}
		})
	}
	for range goroutines {
		wg.Go(func() {
			for range rounds {
				if err := mu.Lock(); err != nil {
					t.Error(err)
					return
				}
				*w.h.Uint64(off + 8)++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, uint64((kernelThreads+goroutines)*rounds), *w.h.Uint64(off + 8), "exact total")
	assert.Zero(t, *w.h.Uint64(off), "lock word free")
	t.Logf("%d acquisitions, %d kernel timeouts retried", (kernelThreads+goroutines)*rounds, timeouts.Load())
}

// TestKernelLockTimeout: a kernel waiter gives up after its deadline without
// the lock, in each queue position, and leaves the queue working: its node is
// freed by the next grant, and a Go waiter behind it gets the lock.
func TestKernelLockTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond // long enough to watch it queue on a busy machine, below may_goto's 250 ms
	w := newLockWorld(t)
	prog := w.program(t, timeout)
	n := w.p.TakeNode()
	defer w.p.GiveNode(n)
	state := (*uint32)(unsafe.Add(w.h.At(n.Off), 4))
	tail := func(off uint64) uint32 { return uint32(atomic.LoadUint64(w.h.Uint64(off)) >> 32) }

	for _, c := range []struct {
		name     string
		waiters  int  // Go waiters queued ahead of the kernel waiter
		follower bool // a Go waiter queues behind it
	}{
		{"head, alone", 0, false},
		{"head, with a follower", 0, true},
		{"queued", 1, false},
		{"queued, with a follower", 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			off, mu := w.lockPair(t)
			require.NoError(t, mu.Lock())
			var wg sync.WaitGroup
			for range c.waiters {
				wg.Go(func() {
					if assert.NoError(t, mu.Lock()) {
						mu.Unlock()
					}
				})
			}
			require.Eventually(t, func() bool { return tail(off) != 0 || c.waiters == 0 }, 5*time.Second, time.Millisecond)
			result := make(chan int32, 1)
			start := time.Now()
			go func() { result <- run(t, prog, w.ctx(off, n)) }()
			// Watch without a ticker: the waiter stays queued for its deadline
			// only. On a loaded machine even a spinning watcher can miss that
			// window; then the follower queues later, and what the waiter left
			// in its node still shows it queued (checked below).
			seen := spinUntil(func() bool { return tail(off) == n.Index+1 }, timeout)
			if c.follower {
				wg.Go(func() {
					if assert.NoError(t, mu.Lock()) {
						*w.h.Uint64(off + 8) += 100
						mu.Unlock()
					}
				})
				if seen {
					spinUntil(func() bool { return tail(off) != n.Index+1 }, timeout)
				}
			}
			assert.Equal(t, int32(mcs.KernelTimedOut), <-result)
			assert.GreaterOrEqual(t, time.Since(start), timeout)
			assert.Equal(t, off, w.p.QueueNode(n.Index).Lock, "the kernel waiter queued on this lock")
			if c.waiters > 0 { // freed only when the holder's release reaches it
				assert.Equal(t, uint32(mcs.NodeAbandoned), w.p.QueueNode(n.Index).State,
					"a waiter behind others leaves its node abandoned")
			}
			assert.Zero(t, *w.h.Uint64(off + 8), "the kernel waiter did not run its critical section")
			mu.Unlock()
			wg.Wait()
			if c.follower {
				assert.Equal(t, uint64(100), *w.h.Uint64(off + 8), "the follower ran")
			}
			assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "lock word free")
			assert.Zero(t, atomic.LoadUint32(state), "the kernel waiter's node is free again")
			require.Zero(t, run(t, prog, w.ctx(off, n)), "and usable")
		})
	}
}

// TestOpenArenaBadInput: a descriptor that is not an arena map gets an error
// naming it, not a mapping.
func TestOpenArenaBadInput(t *testing.T) {
	requireArena(t)
	f, err := os.CreateTemp(t.TempDir(), "not-an-arena")
	require.NoError(t, err)
	defer f.Close()
	_, err = OpenArena(int(f.Fd()))
	assert.ErrorContains(t, err, fmt.Sprintf("arena fd %d", f.Fd()))
	_, err = OpenArena(-1)
	assert.ErrorContains(t, err, "arena fd -1")
	// A BPF map of another type.
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	require.NoError(t, err)
	defer m.Close()
	_, err = OpenArena(m.FD())
	assert.ErrorContains(t, err, "not an arena")
}

// spinUntil polls cond without sleeping until it holds (true) or d passes.
func spinUntil(cond func() bool, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestFutexOnArena: Linux refuses shared futexes on arena memory (EFAULT);
// kflex's futex falls back to private ones, so a waiter in this process is
// woken, and one in another process is not (its timed park covers that).
func TestFutexOnArena(t *testing.T) {
	requireArena(t)
	a, err := NewArena(1 << 20)
	require.NoError(t, err)
	defer a.Close()
	word := (*uint32)(a.Pointer())
	woken := make(chan error, 1)
	go func() {
		for atomic.LoadUint32(word) == 0 {
			if err := futex.Wait(word, 0, 10*time.Second); err != nil {
				woken <- err
				return
			}
		}
		woken <- nil
	}()
	time.Sleep(20 * time.Millisecond) // let it sleep
	start := time.Now()
	atomic.StoreUint32(word, 1)
	_, err = futex.Wake(word, 1)
	require.NoError(t, err)
	require.NoError(t, <-woken)
	assert.Less(t, time.Since(start), 5*time.Second, "woken, not timed out")
}
