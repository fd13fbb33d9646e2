package serve_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
)

// Programs that hold what a cancel must release. The lock's address (the
// context's first word) stays in r8, where the verifier's table finds it.
var holding = map[string]string{
	// lockloop takes the lock and loops, holding it, until cancelled.
	"lockloop": lockHolding(""),
	// lockclobber takes the lock, overwrites its word (a bug of its own),
	// and loops: what a cancel finds there is not the lock it took.
	"lockclobber": lockHolding("\n\tstdw [%r8+0], 0"),
	// lockonce waits for the lock if it is held (cancelled while it waits).
	"lockonce": mcs.LockOnceProgram,
	// allocloop allocates, then loops holding the allocation in r6.
	"allocloop": fmt.Sprintf(`
	mov %%r1, 64
	call %d
	mov %%r6, %%r0
	jeq %%r6, 0, out
	mov %%r7, 1
loop:
	add %%r7, 1
	jne %%r7, 0, loop
	mov %%r1, %%r6
	call %d
out:
	mov %%r0, 0
	exit`, abi.HelperAlloc, abi.HelperFree),
	"add1": "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit",
}

// lockHolding is a program that takes the lock at the context's first word
// (its address in r8), runs body, and loops holding it until cancelled.
func lockHolding(body string) string {
	return `
	mov %r9, %r1
	ldxdw %r8, [%r9+0]
	mov %r1, %r8` + abi.LockCall + body + `
	mov %r7, 1
loop:
	add %r7, 1
	jne %r7, 0, loop
	mov %r1, %r8` + abi.UnlockCall + `
	mov %r0, 0
	exit
` + mcs.BytecodeLock
}

type holdWorld struct {
	h    *heap.Heap
	rt   *serve.Runtime
	lock uint64 // heap offset of a lock word
	mu   *mcs.Mutex
}

func newHoldWorld(t *testing.T, o serve.Options) *holdWorld {
	t.Helper()
	rt, h := runtimeOf(t, holding, o)
	lock, err := h.Alloc(16)
	require.NoError(t, err)
	*h.Uint64(lock) = 0
	mu, err := rt.Process().Mutex(lock)
	require.NoError(t, err)
	return &holdWorld{h: h, rt: rt, lock: lock, mu: mu}
}

// lock takes w's lock from Go within a bound (TryLock, polled), so that a
// lock the runtime failed to release fails the test instead of hanging it.
func (w *holdWorld) lockGo(t *testing.T) error {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ok, err := w.mu.TryLock(); ok || err != nil {
			return err // held (nil or ErrOwnerDied), or ErrNotRecoverable
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lock is still held after 5s: word %#x", *w.h.Uint64(w.lock))
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (w *holdWorld) invoke(ctx context.Context, name string) (uint64, error) {
	return w.rt.Invoke(ctx, name, w.h.Base()+w.lock)
}

// TestCancelAbandonsHeldLock: an extension cancelled while it holds a lock
// does not keep it: the next acquirer, here Go code, takes it over with the
// owner-died result (the extension may have left the data half-updated).
func TestCancelAbandonsHeldLock(t *testing.T) {
	for engine, o := range engines {
		t.Run(engine, func(t *testing.T) {
			o.Budget = 20 * time.Millisecond
			w := newHoldWorld(t, o)
			_, err := w.invoke(context.Background(), "lockloop")
			require.ErrorIs(t, err, abi.ErrCancelled)
			assert.NotContains(t, err.Error(), "releasing what it held")
			require.ErrorIs(t, w.lockGo(t), mcs.ErrOwnerDied)
			w.mu.Consistent()
			w.mu.Unlock()
			assert.Zero(t, *w.h.Uint64(w.lock), "the lock is free again")
			require.NoError(t, w.lockGo(t), "and taken normally after repair")
			w.mu.Unlock()
		})
	}
}

// TestCancelReleaseFails: a cancelled extension whose lock cannot be
// released as the verifier's table says (it overwrote the word) gets a
// cancellation that says so, not only a log line.
func TestCancelReleaseFails(t *testing.T) {
	o := engines["interp"]
	o.Budget = 20 * time.Millisecond
	w := newHoldWorld(t, o)
	_, err := w.invoke(context.Background(), "lockclobber")
	var ce *cancel.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, cancel.Budget, ce.Cause)
	assert.ErrorContains(t, err, "(releasing what it held: mcs: abandon lock at heap offset")
	assert.ErrorContains(t, err, "is not held with")
}

// TestCancelNotRecoverable: an extension whose mcs_lock returned
// LockNotRecoverable holds nothing (mcs_unlock changes nothing); cancelled
// there, it has nothing to release, and its cancellation says nothing of a
// failed release: the word stays not recoverable.
func TestCancelNotRecoverable(t *testing.T) {
	for engine, o := range engines {
		t.Run(engine, func(t *testing.T) {
			o.Budget = 20 * time.Millisecond
			var log strings.Builder // written by the invocations, read after them
			o.Logger = textLog(&log)
			w := newHoldWorld(t, o)
			_, err := w.invoke(context.Background(), "lockloop")
			require.ErrorIs(t, err, abi.ErrCancelled)
			require.ErrorIs(t, w.lockGo(t), mcs.ErrOwnerDied)
			w.mu.Unlock() // without Consistent: not recoverable from now on
			word := *w.h.Uint64(w.lock)
			require.ErrorIs(t, w.lockGo(t), mcs.ErrNotRecoverable)

			_, err = w.invoke(context.Background(), "lockloop") // its lock call returns LockNotRecoverable; it loops on
			require.ErrorIs(t, err, abi.ErrCancelled)
			assert.NotContains(t, log.String(), "level=ERROR", "nothing failed to be released")
			assert.Equal(t, word, *w.h.Uint64(w.lock), "the word is as it was")
			require.ErrorIs(t, w.lockGo(t), mcs.ErrNotRecoverable)
		})
	}
}

// TestCancelLeavesQueue: an extension cancelled while it waits behind a live
// Go holder leaves the queue: the holder's unlock frees the lock (no queue
// left behind), and the executor queues again on the next call.
func TestCancelLeavesQueue(t *testing.T) {
	for engine, o := range engines {
		t.Run(engine, func(t *testing.T) {
			o.Budget = 20 * time.Millisecond
			w := newHoldWorld(t, o)
			require.NoError(t, w.mu.Lock())
			_, err := w.invoke(context.Background(), "lockonce")
			requireCancelledIn(t, err, "lockonce", cancel.Budget)
			w.mu.Unlock()
			assert.Zero(t, *w.h.Uint64(w.lock), "no queue left behind")
			r0, err := w.invoke(context.Background(), "lockonce")
			require.NoError(t, err)
			assert.Zero(t, r0, "acquired")
			assert.Zero(t, *w.h.Uint64(w.lock))
		})
	}
}

// requireCancelledIn checks a cancellation of program for cause c, wherever
// it stopped (in the lock's helper, or at a back-edge).
func requireCancelledIn(t *testing.T, err error, program string, c cancel.Cause) {
	t.Helper()
	require.ErrorIs(t, err, abi.ErrCancelled)
	var ce *cancel.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, program, ce.Program)
	assert.Equal(t, c, ce.Cause)
	assert.NotContains(t, err.Error(), "releasing what it held")
}

// TestCancelFreesAllocations: what a cancelled extension allocated and did
// not publish goes back to the heap.
func TestCancelFreesAllocations(t *testing.T) {
	for engine, o := range engines {
		t.Run(engine, func(t *testing.T) {
			o.Budget = 20 * time.Millisecond
			w := newHoldWorld(t, o)
			before := w.h.Stats().LiveObjects
			_, err := w.invoke(context.Background(), "allocloop")
			requireCancelledIn(t, err, "allocloop", cancel.Budget)
			assert.Equal(t, before, w.h.Stats().LiveObjects, "the allocation was freed")
		})
	}
}

// TestCancelStorm cancels extensions that lock, queue behind a Go holder and
// allocate, at random moments, many times; afterwards the lock word is free,
// the allocator holds what it held before and the runtime still answers.
func TestCancelStorm(t *testing.T) {
	rounds := 1000
	if raceEnabled || testing.Short() {
		rounds = 300
	}
	w := newHoldWorld(t, serve.Options{JIT: 1, Interpreted: 1, Budget: -1})
	before := w.h.Stats().LiveObjects
	rng := rand.New(rand.NewPCG(1, 2))
	var ownerDied, cancelled atomic.Int64
	for i := range rounds {
		prog := []string{"lockloop", "lockonce", "allocloop"}[rng.IntN(3)]
		holdGo := prog == "lockonce" && rng.IntN(2) == 0
		if holdGo {
			if err := w.lockGo(t); errors.Is(err, mcs.ErrOwnerDied) {
				ownerDied.Add(1)
				w.mu.Consistent()
			} else {
				require.NoError(t, err, "round %d", i)
			}
		}
		ctx, stop := context.WithTimeout(context.Background(), time.Duration(rng.IntN(2000))*time.Microsecond)
		_, err := w.invoke(ctx, prog)
		stop()
		if holdGo {
			w.mu.Unlock()
		}
		if err != nil {
			require.ErrorIs(t, err, abi.ErrCancelled, "round %d: %s", i, prog)
			require.NotContains(t, err.Error(), "releasing what it held", "round %d", i)
			cancelled.Add(1)
		}
	}
	// Take the lock once more: it is free, or abandoned by the last lockloop.
	if err := w.lockGo(t); errors.Is(err, mcs.ErrOwnerDied) {
		w.mu.Consistent()
	} else {
		require.NoError(t, err)
	}
	w.mu.Unlock()
	assert.Zero(t, *w.h.Uint64(w.lock), "the lock is free")
	assert.Equal(t, before, w.h.Stats().LiveObjects, "no allocation leaked")
	p := w.rt.Process()
	per := w.h.Header().NodesPerProc
	for i := p.Slot() * per; i < (p.Slot()+1)*per; i++ {
		assert.Equal(t, uint32(mcs.NodeFree), p.QueueNode(i).State, "node %d is in no queue", i)
	}
	assert.Len(t, mcs.Owners(w.h), 1, "one owner slot: the runtime's")
	r0, err := w.rt.Invoke(context.Background(), "add1", 41)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), r0)
	t.Logf("%d rounds: %d cancelled, %d owner-died takeovers by the Go side", rounds, cancelled.Load(), ownerDied.Load())
}

// TestFreeOwnedRefused: kflex_free of an object the runtime owns (its
// extensions' globals, its executors' stacks and rseq areas) returns 1 and
// frees nothing; what the extension allocated it frees, 0.
func TestFreeOwnedRefused(t *testing.T) {
	free := fmt.Sprintf("ldxdw %%r1, [%%r1+0]\ncall %d\nexit", abi.HelperFree)
	for engine, o := range engines {
		t.Run(engine, func(t *testing.T) {
			rt, h := runtimeOf(t, map[string]string{"free": free}, o)
			owned, err := h.AllocOwned(64) // this process is the runtime's: its object
			require.NoError(t, err)
			r0, err := rt.Invoke(context.Background(), "free", h.Base()+owned)
			require.NoError(t, err)
			assert.Equal(t, uint64(1), r0, "the runtime's own object is not the extension's to free")
			require.NoError(t, h.FreeOwned(owned), "still allocated, still owned")
			plain, err := h.Alloc(64)
			require.NoError(t, err)
			r0, err = rt.Invoke(context.Background(), "free", h.Base()+plain)
			require.NoError(t, err)
			assert.Zero(t, r0)
		})
	}
}

// TestNullStoreHeaderRestored: an extension's store through a NULL pointer
// (r3 with argument 0: the heap's offset 0) overwrites the heap's header;
// the runtime puts it back after the invocation, says so, and the heap file
// opens again.
func TestNullStoreHeaderRestored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	var log strings.Builder // written by the invocation, read after it
	o := engines["interp"]
	o.Logger = textLog(&log)
	rt := runtimeOn(t, h, map[string]string{"null": "stdw [%r3+0], 0x41\nmov %r0, 0\nexit"}, o)
	_, err = rt.Invoke(context.Background(), "null", 0)
	require.NoError(t, err)
	h2, err := heap.Open(path, nil)
	require.NoError(t, err, "the header is whole again")
	h2.Close()
	assert.Contains(t, log.String(), `level=WARN msg="the heap's header was overwritten (a store through a NULL or wild pointer?): restored" program=null`)
}
