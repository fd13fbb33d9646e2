package serve_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// counter8 increments, for 100 rounds, the counter of lock (round % 8) of the
// array of eight {lock word, counter} pairs at its argument, under that lock.
var counter8 = `
	mov %r9, %r1
	mov %r6, 0
loop:
	ldxdw %r1, [%r9+0]
	mov %r7, %r6
	and %r7, 7
	lsh %r7, 4
	add %r1, %r7
	stxdw [%r10-8], %r1
` + serve.LockCall + `
	ldxdw %r1, [%r10-8]
	ldxdw %r7, [%r1+8]
	add %r7, 1
	stxdw [%r1+8], %r7
` + serve.UnlockCall + `
	add %r6, 1
	jlt %r6, 100, loop
	mov %r0, 0
	exit
` + mcs.BytecodeLock

const roleMixed = "serve-mixed"

// TestMixedContention: two user processes of four goroutines each (Go lock),
// and the runtime's four JIT executors and one interpreting executor (bytecode
// lock), all increment counters under the same eight locks: 220,000
// acquisitions, exact totals. TestMixedContentionKernel adds kernel threads.
func TestMixedContention(t *testing.T) {
	if testutil.Role() == roleMixed {
		mixedChild(t)
		return
	}
	f := start(t)
	mixedContention(t, f.h, nil, "KFLEX_HEAP="+f.h.Name())
}

// TestMixedContentionKernel is TestMixedContention on a heap in a BPF arena,
// with two more threads running the lock's kernel form in Linux (test runs of
// kernel.LockCounter): 240,000 acquisitions under the same eight locks.
func TestMixedContentionKernel(t *testing.T) {
	if testutil.Role() == roleMixed {
		mixedChild(t)
		return
	}
	a, h := arenaHeap(t, 16<<20)
	defer h.Close()
	mixedContention(t, h, a, "KFLEX_ARENA_FD=3")
}

// mixedContention runs the contention test on h. If h is in arena a (not nil),
// two kernel threads run kernel.LockCounter too, and the child processes get
// the arena as file descriptor 3.
func mixedContention(t *testing.T, h *heap.Heap, a *kernel.Arena, childEnv string) {
	kernelThreads := 0
	if a != nil {
		kernelThreads = 2
	}
	insns, err := bytecode.Assemble(counter8)
	require.NoError(t, err)
	rt, err := serve.NewWith(h, map[string]asm.Instructions{"counter8": insns}, serve.Options{JIT: 4, Interpreted: 1, Budget: -1})
	require.NoError(t, err)
	defer rt.Close()
	locks, err := h.Alloc(8 * 16)
	require.NoError(t, err)
	clear(h.Bytes(locks, 8*16))
	const children, goroutines, goRounds = 2, 4, 15000
	const invokers, invocations = 5, 200 // × 100 rounds each
	const kernelRounds = 10000
	var offs []string
	for i := range 8 {
		offs = append(offs, strconv.FormatUint(locks+uint64(16*i), 10))
	}
	var wg sync.WaitGroup
	for range children {
		cmd := testutil.Child(t, t.Name(), roleMixed, childEnv,
			"KFLEX_LOCKS="+strings.Join(offs, ","), fmt.Sprintf("KFLEX_ROUNDS=%d", goRounds),
			fmt.Sprintf("KFLEX_GOROUTINES=%d", goroutines))
		if kernelThreads > 0 {
			// A duplicate: an os.File closes its descriptor when collected.
			fd, err := unix.FcntlInt(uintptr(a.FD()), unix.F_DUPFD_CLOEXEC, 0)
			require.NoError(t, err)
			f := os.NewFile(uintptr(fd), "arena")
			defer f.Close()
			cmd.ExtraFiles = []*os.File{f}
		}
		wg.Go(func() {
			out, err := cmd.Output()
			assert.NoError(t, err, "%s", out)
		})
	}
	for range invokers {
		wg.Go(func() {
			for range invocations {
				if _, err := rt.Invoke(context.Background(), "counter8", h.Base()+locks); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	kernelDone := func() {}
	if kernelThreads > 0 {
		kernelDone = kernelContenders(t, &wg, a, h, locks, kernelThreads, kernelRounds, 8)
	}
	wg.Wait()
	kernelDone()
	total := uint64(0)
	for i := range 8 {
		total += *h.Uint64(locks + uint64(16*i) + 8)
		assert.Zero(t, *h.Uint64(locks + uint64(16*i)), "lock %d left held", i)
	}
	want := uint64(children*goroutines*goRounds + invokers*invocations*100 + kernelThreads*kernelRounds)
	assert.Equal(t, want, total)
	t.Logf("%d acquisitions", total)
}

// kernelContenders starts threads that each take the locks at locks (nlocks
// {word, counter} pairs) rounds times in turn through kernel.LockCounter, with
// a queue node of their own, retrying a lock that timed out. The returned
// function, called after wg's Wait, releases what they used.
func kernelContenders(t *testing.T, wg *sync.WaitGroup, a *kernel.Arena, h *heap.Heap, locks uint64, threads, rounds, nlocks int) func() {
	lc, err := kernel.LoadLockProgram(a, kernel.LockCounter, mcs.KernelSpinTimeout)
	require.NoError(t, err)
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	for th := range threads {
		n := p.TakeNode()
		ctxs := make([][]byte, nlocks)
		for i := range ctxs {
			ctxs[i] = kernel.LockArgs{Lock: h.Base() + locks + uint64(16*i), Node: n, Held: p.Held(),
				Base: h.Base(), Table: h.Header().NodeOff}.Context()
		}
		wg.Go(func() {
			defer p.GiveNode(n)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			timeouts, busy, stuck := 0, 0, 0
			for r := 0; r < rounds; {
				switch res, err := lc.Lock(ctxs[(th+r)%nlocks]); {
				case err != nil:
					t.Error(err)
					return
				case res == 0:
					r++
				case res == mcs.KernelTimedOut:
					timeouts++
				case res == mcs.KernelNodeBusy: // its abandoned node is not yet freed
					busy++
					time.Sleep(100 * time.Microsecond)
				case res == mcs.KernelStuck || res == mcs.KernelStuckUnheld:
					// The hand-off the kernel could not finish, done from Go.
					if err := p.Unstick(locks+uint64(16*((th+r)%nlocks)), n, res); err != nil {
						t.Error(err)
						return
					}
					stuck++
				default:
					t.Errorf("kernel lock: %d", res)
					return
				}
			}
			t.Logf("kernel thread %d: %d rounds; %d timed out and retried, %d found the node still abandoned, %d stuck and unstuck from Go",
				th, rounds, timeouts, busy, stuck)
		})
	}
	return func() {
		lc.Close()
		p.Detach()
	}
}

func mixedChild(t *testing.T) {
	var h *userspace.Heap
	var err error
	if os.Getenv("KFLEX_ARENA_FD") != "" {
		a, aerr := kernel.OpenArena(int(testutil.EnvUint(t, "KFLEX_ARENA_FD")))
		require.NoError(t, aerr)
		defer a.Close()
		raw, herr := a.OpenHeap()
		require.NoError(t, herr)
		h, err = userspace.AttachHeap(raw)
	} else {
		h, err = userspace.Attach(os.Getenv("KFLEX_HEAP"), nil)
	}
	require.NoError(t, err)
	defer h.Close()
	offs := testutil.EnvUints(t, "KFLEX_LOCKS")
	rounds, goroutines := int(testutil.EnvUint(t, "KFLEX_ROUNDS")), int(testutil.EnvUint(t, "KFLEX_GOROUTINES"))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for r := range rounds {
				p := h.Base() + userspace.Ptr(offs[(g+r)%len(offs)])
				m, err := h.Mutex(p)
				if err != nil {
					t.Error(err)
					return
				}
				if err := m.Lock(); err != nil {
					t.Error(err)
					return
				}
				*h.Uint64(p + 8)++
				m.Unlock()
			}
		})
	}
	wg.Wait()
}
