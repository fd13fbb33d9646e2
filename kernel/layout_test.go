package kernel

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/mcs"
)

// memfdWorld is lockWorld on a memfd heap (no arena: w.a is nil).
func memfdWorld(t *testing.T) *lockWorld {
	h, err := heap.CreateMemfd("layout", &heap.Options{Params: heap.Params{Size: 4 << 20}})
	require.NoError(t, err)
	return attachWorld(t, h, nil)
}

// layoutExecutor is one way of taking and releasing the lock.
type layoutExecutor struct {
	name             string
	acquire, release func() error
	node             int64 // the node index it queues with, or -1: any of its process's
}

// TestLayoutContract: the lock word and the queue nodes are read and written
// by Go code, interpreted and compiled bytecode (the lock's runtime form) and
// Linux (its kernel form), each with its own copy of the layout (Go constants;
// numbers in the bytecode). For every ordered pair of executors one holds the
// lock and the other queues behind it, and each state is checked as Go decodes
// it: what the holder wrote, what the waiter wrote when it read the holder's
// word (the tail, its node's fields), the holder's bits surviving the tail
// swap, and the hand-off, which works only if the waiter reads the grant where
// the holder writes it; then the node freed and the word free. The heap is a
// BPF arena where this process can make one (the kernel row needs it);
// elsewhere a memfd heap, without the kernel.
func TestLayoutContract(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	// A wedged kernel would hang the probe; elsewhere the host's answer
	// decides whether the kernel row runs.
	world := memfdWorld
	if kernelHung != nil {
		t.Logf("without the kernel row: %v", kernelHung)
	} else if testutil.KernelPart(t, hostprobe.Programs, Supported) &&
		testutil.KernelPart(t, hostprobe.Arena, HaveArena) {
		world = arenaWorld
	}
	w := world(t)
	off, mu := w.lockPair(t)
	kn, jn, in := w.p.TakeNode(), w.p.TakeNode(), w.p.TakeNode()
	defer w.p.GiveNode(kn)
	defer w.p.GiveNode(jn)
	defer w.p.GiveNode(in)

	kernelProg := func(what LockProgram) *KernelLocker {
		if w.a == nil {
			return nil
		}
		p, err := LoadLockProgram(w.a, what, 2*time.Second) // a waiter outwaits the test's steps
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		return p
	}
	kHold, kRelease := kernelProg(LockHold), kernelProg(LockRelease)
	kernelRun := func(p *KernelLocker) func() error {
		return func() error {
			for {
				r0, err := p.Lock(w.ctx(off, kn))
				switch {
				case err != nil:
					return err
				case r0 == mcs.KernelTimedOut || r0 == mcs.KernelNodeBusy:
					// may_goto ends a wait after ~250 ms whatever the deadline:
					// on a loaded machine the test's steps can take longer.
					// Retry, as every kernel-side caller does.
					time.Sleep(time.Millisecond)
				case r0 != 0:
					return fmt.Errorf("kernel: r0 = %d", r0)
				default:
					return nil
				}
			}
		}
	}

	// kflex's executors run the same programs (their casts change nothing in
	// one view) with the runtime form of the lock.
	scratch, err := w.h.Alloc(jit.ScratchSize)
	require.NoError(t, err)
	m, err := jit.NewMachineIn(jit.Region{Base: w.h.At(0), Size: w.h.Size(), Canon: w.h.CanonBase(), Scratch: scratch})
	require.NoError(t, err)
	defer m.Close()
	helpers := map[int32]interp.Helper{
		mcs.HelperWake: func(_ interp.Memory, addr, _, _, _, _ uint64) (uint64, error) { return 0, mcs.WakeHelper(addr) },
		mcs.HelperLockCheck: func(_ interp.Memory, lock, node, idx, held, _ uint64) (uint64, error) {
			return w.p.LockCheck(lock, node, idx, held), nil
		},
	}
	m.Helpers = helpers
	im := interp.NewMachine()
	im.AttachHeap(w.h.At(0), w.h.Size(), w.h.CanonBase())
	im.Helpers = helpers
	im.MaxInsns = 4e9
	ours := func(what LockProgram) (jitRun, interpRun func() error) {
		insns, err := bytecode.Assemble(lockPrograms[what] + lockSubprograms(what, mcs.BytecodeLock))
		require.NoError(t, err)
		jp, err := jit.Compile(insns)
		require.NoError(t, err)
		t.Cleanup(func() { jp.Close() })
		ip, err := interp.Load(insns)
		require.NoError(t, err)
		check := func(r0 uint64, err error) error {
			if err == nil && r0 != 0 {
				err = fmt.Errorf("r0 = %d", r0)
			}
			return err
		}
		return func() error { return check(m.Run(jp, w.ctx(off, jn))) },
			func() error { return check(im.Run(ip, w.ctx(off, in))) }
	}
	jHold, iHold := ours(LockHold)
	jRelease, iRelease := ours(LockRelease)

	executors := []layoutExecutor{
		{"go", mu.Lock, func() error { mu.Unlock(); return nil }, -1},
		{"jit", jHold, jRelease, int64(jn.Index)},
		{"interp", iHold, iRelease, int64(in.Index)},
	}
	if w.a != nil {
		executors = append(executors, layoutExecutor{"kernel", kernelRun(kHold), kernelRun(kRelease), int64(kn.Index)})
	}
	word := func() mcs.LockState { return mcs.DecodeWord(atomic.LoadUint64(w.h.Uint64(off))) }
	holding := mcs.LockState{Locked: true, Owner: w.p.Slot() + 1, Gen: w.p.Gen() & 0xfff}
	for _, holder := range executors {
		for _, waiter := range executors {
			if holder.name == waiter.name {
				continue
			}
			t.Run(holder.name+"_holds_"+waiter.name+"_waits", func(t *testing.T) {
				require.Equal(t, mcs.LockState{}, word(), "free to begin with")
				require.NoError(t, holder.acquire())
				require.Equal(t, holding, word(), "%s took the free lock: locked, owner slot and generation, no queue", holder.name)

				waited := make(chan error, 1)
				go func() { waited <- waiter.acquire() }()
				require.Eventually(t, func() bool { return word().Tail != 0 }, 10*time.Second, 100*time.Microsecond,
					"%s never queued", waiter.name)
				tail := word().Tail - 1
				if waiter.node >= 0 {
					require.Equal(t, uint32(waiter.node), tail, "the tail is %s's node", waiter.name)
				}
				n := w.p.QueueNode(tail)
				require.Equal(t, w.p.Slot()+1, n.Owner, "the node names the waiter's process")
				require.Equal(t, off, n.Lock, "the node names the lock by its heap offset")
				require.Contains(t, []uint32{mcs.NodeWaiting, mcs.NodeParked, mcs.NodeHead}, n.State)
				s := word()
				s.Tail, s.HeadSleeping, s.WakePending = 0, false, false
				require.Equal(t, holding, s, "the holder's bits survive the waiter's tail swap")
				select {
				case err := <-waited:
					t.Fatalf("%s took a held lock (%v)", waiter.name, err)
				case <-time.After(5 * time.Millisecond):
				}

				require.NoError(t, holder.release())
				select {
				case err := <-waited:
					require.NoError(t, err)
				case <-time.After(10 * time.Second):
					t.Fatalf("%s released, %s never got the lock: %+v, node %+v", holder.name, waiter.name, word(), w.p.QueueNode(tail))
				}
				s = word()
				s.HeadSleeping, s.WakePending = false, false
				require.Equal(t, holding, s, "%s holds, the queue is empty", waiter.name)
				require.Equal(t, uint32(mcs.NodeFree), w.p.QueueNode(tail).State, "the waiter's node is free again")
				require.NoError(t, waiter.release())
				require.Equal(t, mcs.LockState{}, word(), "free at the end")
			})
		}
	}
}
