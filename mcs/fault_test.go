//go:build kflexfault

package mcs

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
)

// TestKillAtEveryPoint kills a child at each fault point of the protocol (its
// own SIGKILL, at the named step: go test -tags kflexfault) while it queues on
// a lock this process holds, between a waiter of ours ahead of it (ahead) or
// not, and one behind it. The waiters get the lock, in order, with
// ErrOwnerDied where the child died holding it; the lock is then usable by
// everyone, and the node and owner tables are as they began.
func TestKillAtEveryPoint(t *testing.T) {
	for _, c := range []struct {
		point string
		ahead bool // a waiter of ours queued ahead of the child
		held  bool // the child dies holding the lock
	}{
		{FaultSwapped, false, false},
		{FaultSwapped, true, false}, // the MCS window: swapped the tail, not linked
		{FaultLinked, true, false},
		{FaultParked, true, false},
		{FaultHead, false, false},
		{FaultHead, true, false},
		{FaultHeadParked, false, false},
		{FaultTaken, false, true},
		{FaultTaken, true, true},
		{FaultGranted, false, true},
		{FaultGranted, true, true},
	} {
		t.Run(fmt.Sprintf("%s/ahead=%v", c.point, c.ahead), func(t *testing.T) {
			sc := newScene(t, c.ahead)
			w, off, m, first, tail := sc.w, sc.off, sc.m, sc.first, sc.tail
			x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+c.point)
			tail = w.queuedAfter(t, off, tail)
			// Reached without the lock changing hands: let the child die there
			// before anyone moves.
			before := c.point != FaultTaken && c.point != FaultGranted && !(c.point == FaultHead && c.ahead)
			if before {
				requireKilled(t, x)
			}
			third := lockAsync(mutex(t, w.p, off), &sc.seq, 3)
			w.queuedAfter(t, off, tail)
			m.Unlock()
			if !before {
				requireKilled(t, x)
			}
			if first != nil {
				require.NoError(t, result(t, first))
			}
			err := result(t, third)
			if c.held {
				require.ErrorIs(t, err, ErrOwnerDied)
			} else {
				require.NoError(t, err)
			}
			if c.ahead {
				assert.Equal(t, []int{1, 3}, sc.seq)
			} else {
				assert.Equal(t, []int{3}, sc.seq)
			}
			w.settled(t, off, 0)
		})
	}
}

// requireKilled waits for the child to die of its fault point's SIGKILL.
func requireKilled(t *testing.T, x *lockerChild) {
	t.Helper()
	st := x.wait(t)
	ws, _ := st.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the child reached its fault point: %v", st)
}

// TestUnstickDeadSuccessor: the KernelStuck case proper. A kernel-form holder
// waited for a successor that died between its tail swap and its link;
// Unstick finds it by its prev, skips it, ends the queue and releases the lock.
func TestUnstickDeadSuccessor(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	n := w.stuckHolder(t, off)
	x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
	requireKilled(t, x)
	require.NoError(t, w.p.Unstick(off, n, KernelStuck))
	w.settled(t, off, 0)
}

// TestKilledInAttach kills a child inside Attach, after its designated
// thread claimed an owner slot (the CAS of its TID into the liveness word)
// and before it linked the slot's entry into its robust list
// (FaultAttachClaimed). The kernel finds the entry as the list's
// list_op_pending and marks the word: the slot reads dead, WaitDeath says
// so, and Reap gives it back. Before the list was registered ahead of the
// claim, such a slot read alive forever.
func TestKilledInAttach(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	for range 3 {
		cmd := testutil.Child(t, "TestLockerChild", childLocker, "KFLEX_HEAP="+w.path,
			fmt.Sprintf("KFLEX_LOCK=%d", off), "KFLEX_ACT="+actHold, "KFLEX_FAULT="+FaultAttachClaimed)
		require.NoError(t, cmd.Start())
		err := cmd.Wait()
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the child reached its fault point: %v", err)

		owners := Owners(w.h)
		require.Len(t, owners, 2, "the child claimed a slot: %+v", owners)
		var dead OwnerState
		for _, o := range owners {
			if o.Slot != w.p.Slot() {
				dead = o
			}
		}
		assert.True(t, WaitDeath(w.h, dead.Slot, 5*time.Second), "the kernel marked slot %d dead: %+v", dead.Slot, owners)
		assert.Equal(t, 1, Reap(w.h), "the dead slot given back")
		assert.Len(t, Owners(w.h), 1)
	}
	w.settled(t, off, 0)
}

// TestKilledInDetach kills a child inside Detach, after its designated
// thread emptied its robust list and before it freed its slot
// (FaultDetachUnlisted). The slot's entry is the list's list_op_pending
// there, so the kernel marks the word at the death: the slot reads dead and
// Reap gives it back. Before, with nothing pending, the slot named the dead
// thread and read alive for good.
func TestKilledInDetach(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	for range 3 {
		c := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultDetachUnlisted)
		assert.Equal(t, "got <nil>", c.line(t))
		requireKilled(t, c)
		assert.True(t, WaitDeath(w.h, c.slot, 5*time.Second), "the kernel marked slot %d dead: %+v", c.slot, Owners(w.h))
		assert.Equal(t, 1, Reap(w.h), "the dead slot given back")
		assert.Len(t, Owners(w.h), 1)
	}
	w.settled(t, off, 0)
}

// TestBytecodeHolderDeadSuccessor: a JIT extension that took the lock waits
// for the successor that swapped itself in behind it to link itself; the
// successor, a child, was killed in between (FaultSwapped). The extension's
// HelperLockCheck finds it by its prev and links it; the extension grants it,
// returns with the lock, and the next locker recovers past the dead node.
// Before, the extension spun in mcs_lock_next forever.
func TestBytecodeHolderDeadSuccessor(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	jp, _ := compileBoth(t, LockOnceProgram)
	sc := newScene(t, false)
	w, off, m := sc.w, sc.off, sc.m
	got := w.runExtension(t, jp, off)
	tail := w.queuedAfter(t, off, 0) // the extension, behind this process's hold
	x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
	requireKilled(t, x)
	require.NotEqual(t, tail, wordTail(atomic.LoadUint64(w.h.Uint64(off))), "the child swapped itself in")
	m.Unlock()
	w.extensionAcquired(t, got, off, "waits for its dead successor", nil)
	// The dead child is the queue's head now: the next locker steps past it.
	require.NoError(t, m.Lock())
	m.Unlock()
	w.settled(t, off, 0)
}

// queueLeft queues a node of p's on the lock at off behind somebody
// (queueBehind) and leaves it as a kernel waiter that times out does
// (timeOut): abandoned, its owner alive, its next 0. It returns the node.
func (w *world) queueLeft(t *testing.T, p *Process, off uint64) Node {
	t.Helper()
	n := w.queueBehind(t, p, off)
	timeOut(t, p, n)
	return n
}

// TestBytecodeGranterSkipsToDeadSuccessor: the granter, a JIT extension (or a
// Go waiter) that takes the lock, finds its successor A abandoned (a live
// process's node whose executor was cancelled while it waited: Leave) and
// skips it; behind A, D, a child's node, swapped the tail and was killed
// before linking itself (FaultSwapped): A.next stays 0. The granter finds D
// by its prev, as it finds its own unlinked dead successor, skips it too
// (bytecode grants it, and the next locker steps past the dead head) and
// returns with the lock. Before, the extension waited for A's link forever in
// mcs_lock_skip, a loop of the shielded subprogram that neither checks for
// the dead nor can be cancelled: the lock stayed held by the runtime, every
// Go waiter behind it stuck, and the runtime would not stop (kflex stress
// with -tags kflexfault, seed 5).
func TestBytecodeGranterSkipsToDeadSuccessor(t *testing.T) {
	eachGranter(t, func(t *testing.T, sc *scene, start func() granter) {
		w, off, m := sc.w, sc.off, sc.m
		g := start()
		tail := w.queuedAfter(t, off, 0)
		pa, paDone := w.attached(t)
		a := w.queueLeft(t, pa, off)
		tail = w.queuedAfter(t, off, tail)
		x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
		requireKilled(t, x)
		require.NotEqual(t, tail, wordTail(atomic.LoadUint64(w.h.Uint64(off))), "the child swapped itself in behind A")
		require.Zero(t, pa.QueueNode(a.Index).Next, "and never linked")
		m.Unlock()
		g.acquired(t, w, off, "skipped A, waiting for its link,", func() {
			t.Logf("A: %+v", pa.QueueNode(a.Index))
			// Link D for it, so that it ends before the heap is unmapped.
			atomic.CompareAndSwapUint32(pa.node(a.Index).next(), 0, DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).Tail)
		})
		// The dead child may be the queue's head now: the next locker
		// steps past it.
		require.NoError(t, m.Lock())
		m.Unlock()
		assert.True(t, pa.NodeFree(a), "A freed by the granter that skipped it")
		if pa.NodeFree(a) {
			pa.GiveNode(a)
		}
		paDone()
		w.settled(t, off, 0)
	})
}

// grantedOrRescued waits (boundedly) for a lockAsync's result, of a waiter
// that a granter stuck on node a (waiting for a's link) would never reach:
// past the bound it links a to the waiter (index+1 wn) itself, so that the
// granter goes on and a failing test leaves nobody waiting on a heap its
// cleanup unmaps, and fails.
func (w *world) grantedOrRescued(t *testing.T, done chan error, a, wn uint32) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		atomic.StoreUint32(w.p.node(a).next(), wn)
		<-done
		t.Fatalf("the granter still waited for node %d's link 20 s later", a)
	}
}

// TestReapKeepsUnlinkedDeadSuccessors: behind G, a waiter of ours, A is a
// live process's node that its waiter left (abandoned); D, a child's node,
// swapped the tail behind A and was killed before linking itself; V, another
// child's, swapped the tail behind D and was killed the same way; W, a waiter
// of ours, queued behind V (V.next = W), repaired past V, D and A to G. A.next
// and D.next are 0, and nothing names V any more. Reap must keep D and V:
// once the holder unlocks, G, the granter, skips A and finds D by its prev
// (deadSuccessor), then V by D's, and reaches W. Before, Reap freed V (only
// D, whose predecessor A a granter could reach, was kept), deadSuccessor did
// not take D, whose next is 0 and whom nothing queued names, for a queued
// node, and G waited for A's link forever (the kflexfault stress with kills
// aimed at the tail-swap window: a wedged lock).
func TestReapKeepsUnlinkedDeadSuccessors(t *testing.T) {
	sc := newScene(t, true)
	w, off, m := sc.w, sc.off, sc.m
	g := sc.tail
	pa, paDone := w.attached(t)
	a := w.queueLeft(t, pa, off)
	tail := w.queuedAfter(t, off, g)
	var dead []uint32 // D, V
	for range 2 {
		x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
		requireKilled(t, x)
		tail = w.queuedAfter(t, off, tail)
		dead = append(dead, tail)
	}
	third := lockAsync(mutex(t, w.p, off), &sc.seq, 3)
	wn := w.queuedAfter(t, off, tail)
	require.Eventually(t, func() bool { return w.p.QueueNode(wn-1).Prev == g }, 20*time.Second, 100*time.Microsecond,
		"W repaired past V, D and A to G")
	require.Zero(t, pa.QueueNode(a.Index).Next, "A never linked")
	require.Zero(t, w.p.QueueNode(dead[0]-1).Next, "D never linked")

	Reap(w.h)
	for k, name := range []string{"D", "V"} {
		assert.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(dead[k]-1).State, "%s kept for the granter at A", name)
	}
	m.Unlock()
	w.grantedOrRescued(t, third, a.Index, wn) // G grants W before its Lock returns
	require.NoError(t, result(t, sc.first))
	assert.Equal(t, []int{1, 3}, sc.seq)
	assert.True(t, pa.NodeFree(a), "A freed by the granter that skipped it")
	if pa.NodeFree(a) {
		pa.GiveNode(a)
	}
	paDone()
	w.settled(t, off, 0)
}

// TestReapFollowsGranterPastSkipped: G, a child, takes the lock and grants:
// its successor B is a live process's node that its waiter left, behind B is
// A, a child's node, linked and killed (FaultLinked), behind A is D, a child's
// node, killed between its tail swap and its link (FaultSwapped), and behind
// D is W, a waiter of ours, which repaired past D, A and B to G. G skips B and
// frees it, and stops there (FaultSkipped, FaultActionStop), on its way to A.
// Reap runs. It must keep A and D: G goes on to A and finds D by its prev.
// Before, G's node still named B, freed, as its next, so nothing Reap
// follows reached A (dead, abandoned by W): Reap freed A and D, and G,
// continued, waited for A's link forever.
func TestReapFollowsGranterPastSkipped(t *testing.T) {
	sc := newScene(t, false)
	w, off, m := sc.w, sc.off, sc.m
	g := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSkipped, "KFLEX_FAULT_ACTION="+FaultActionStop)
	gi := w.queuedAfter(t, off, 0)
	pa, paDone := w.attached(t)
	b := w.queueLeft(t, pa, off)
	tail := w.queuedAfter(t, off, gi)
	var dead []uint32 // A, D
	for _, pt := range []string{FaultLinked, FaultSwapped} {
		x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+pt)
		requireKilled(t, x)
		tail = w.queuedAfter(t, off, tail)
		dead = append(dead, tail)
	}
	third := lockAsync(mutex(t, w.p, off), &sc.seq, 3)
	wn := w.queuedAfter(t, off, tail)
	require.Eventually(t, func() bool { return w.p.QueueNode(wn-1).Prev == gi }, 20*time.Second, 100*time.Microsecond,
		"W repaired past D, A and B to G")
	require.Zero(t, w.p.QueueNode(dead[0]-1).Next, "A's successor D never linked")

	m.Unlock()
	pid := g.cmd.Process.Pid
	require.Eventually(t, func() bool { return testutil.Stopped(t, pid) }, 20*time.Second, 100*time.Microsecond,
		"G stopped after skipping B")
	require.True(t, pa.NodeFree(b), "B freed by G")
	Reap(w.h)
	for k, name := range []string{"A", "D"} {
		assert.NotEqual(t, uint32(NodeFree), w.p.QueueNode(dead[k]-1).State, "%s kept for G, on its way to A", name)
	}
	// G stops at every skip: keep it going until W has the lock.
	cont := make(chan struct{})
	go func() {
		for {
			select {
			case <-cont:
				return
			case <-time.After(time.Millisecond):
				syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}()
	w.grantedOrRescued(t, third, dead[0]-1, wn)
	close(cont)
	syscall.Kill(pid, syscall.SIGCONT)
	assert.Equal(t, "got <nil>", g.line(t))
	require.True(t, g.wait(t).Success())
	pa.GiveNode(b)
	paDone()
	w.settled(t, off, 0)
}

// TestReapNodeNeverQueued: a child killed while it set up a node for its
// first wait (FaultNodeSetUp: its state says waiting, its owner and lock are
// not written yet), so never swapped into a queue (the cross-process fuzzer
// found one: node {State:1 Lock:0}), left the node busy, and Reap kept its
// slot for good. Reap frees the node and the slot.
func TestReapNodeNeverQueued(t *testing.T) {
	sc := newScene(t, false)
	w, off, m := sc.w, sc.off, sc.m
	x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultNodeSetUp)
	requireKilled(t, x)
	npp := w.h.Header().NodesPerProc
	var busy []uint32
	for i := x.slot * npp; i < (x.slot+1)*npp; i++ {
		if q := w.p.QueueNode(i); q.State != NodeFree {
			busy = append(busy, i)
			assert.Equal(t, QueueNode{State: NodeWaiting}, q, "node %d: its state written, nothing else", i)
		}
	}
	require.Len(t, busy, 1, "the child set up one node")
	require.Zero(t, wordTail(atomic.LoadUint64(w.h.Uint64(off))), "and never queued it")
	Reap(w.h)
	assert.Equal(t, uint32(NodeFree), w.p.QueueNode(busy[0]).State, "the node is free")
	for _, o := range Owners(w.h) {
		assert.NotEqual(t, x.slot, o.Slot, "the dead slot is reclaimed")
	}
	m.Unlock()
	w.settled(t, off, 0)
}

// TestRepairFreesPastUnlinkedDeadSuccessor: H, a child's waiter, is the
// queue's head; behind it D, a child's node, swapped the tail and was killed
// before linking itself (FaultSwapped: H.next stays 0); behind D, A, a live
// process's node that its waiter left; behind A, E, a JIT extension, whose
// HelperLockCheck looked through A and D (abandoning D) to H, alive then,
// and waits (an executor keeps no list of what it looked through). H's
// child is killed: E's next check replaces the dead head, makes itself the
// head, and frees the abandoned nodes between H and itself (freeAhead), A
// included, whose live owner will never free it: the walk goes from H past
// the hole to D, found by its prev. Before, it started at H's next, 0, and
// A stayed abandoned for good (with kills aimed at the window, the stress
// runtime's cancelled executors ran out of nodes).
func TestRepairFreesPastUnlinkedDeadSuccessor(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	jp, _ := compileBoth(t, LockOnceProgram)
	sc := newScene(t, false)
	w, off, m := sc.w, sc.off, sc.m
	h := w.startLocker(t, off, actOnce)
	hi := w.queuedAfter(t, off, 0)
	d := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
	requireKilled(t, d)
	di := w.queuedAfter(t, off, hi)
	require.Zero(t, w.p.QueueNode(hi-1).Next, "D never linked")
	pa, paDone := w.attached(t)
	a := w.queueLeft(t, pa, off)
	ai := w.queuedAfter(t, off, di)
	got := w.runExtension(t, jp, off)
	ei := w.queuedAfter(t, off, ai)
	require.Eventually(t, func() bool { return w.p.QueueNode(ei-1).Prev == hi }, 20*time.Second, 100*time.Microsecond,
		"E looked through A and D to H")
	h.kill()
	require.Eventually(t, func() bool { return w.p.QueueNode(ei-1).State == NodeHead }, 20*time.Second, 100*time.Microsecond,
		"E replaced the dead head")
	// E frees what it passed after it says head (repair: head, then the walk).
	assert.Eventually(t, func() bool { return pa.NodeFree(a) }, 20*time.Second, 100*time.Microsecond, "A freed by E")
	assert.Eventually(t, func() bool { return w.p.QueueNode(di-1).State == NodeFree }, 20*time.Second, 100*time.Microsecond,
		"D freed by E")
	m.Unlock()
	w.extensionAcquired(t, got, off, "waits", nil)
	if pa.NodeFree(a) {
		pa.GiveNode(a)
	} else {
		w.setNode(a.Index, QueueNode{})
		pa.GiveNode(a)
	}
	paDone()
	w.settled(t, off, 0)
}

// TestReapEndsDeadQueueFreesHanging: H, a child's waiter, is the queue's
// head; behind it A, a live process's node that its waiter left; behind A,
// T, another child's waiter, which looked through A to H (T.prev = H). Both
// children are killed: from the tail T back along prev to H every node is
// dead, and Reap ends the queue. A hangs off it by next only, and it must be
// freed too: its owner lives (a cancelled executor waits for it), and nobody
// else will ever skip it. Before, Reap freed H and T and left A abandoned
// for good (with kills aimed at the tail-swap window, the stress runtime
// leaked such nodes).
func TestReapEndsDeadQueueFreesHanging(t *testing.T) {
	sc := newScene(t, false)
	w, off, m := sc.w, sc.off, sc.m
	h := w.startLocker(t, off, actOnce)
	hi := w.queuedAfter(t, off, 0)
	pa, paDone := w.attached(t)
	a := w.queueLeft(t, pa, off)
	ai := w.queuedAfter(t, off, hi)
	x := w.startLocker(t, off, actOnce)
	ti := w.queuedAfter(t, off, ai)
	require.Eventually(t, func() bool { return w.p.QueueNode(ti-1).Prev == hi }, 20*time.Second, 100*time.Microsecond,
		"T looked through A to H")
	x.kill()
	h.kill()
	Reap(w.h)
	assert.Zero(t, wordTail(atomic.LoadUint64(w.h.Uint64(off))), "the dead queue ended")
	assert.True(t, pa.NodeFree(a), "A freed with it")
	if !pa.NodeFree(a) {
		w.setNode(a.Index, QueueNode{})
	}
	pa.GiveNode(a)
	paDone()
	m.Unlock()
	w.settled(t, off, 0)
}

// TestLiveLinkBeforeStaleDeadSuccessor: G, a waiter of ours, takes the
// lock and waits for its successor S, a child stopped between its tail swap
// and its link (FaultSwapped, FaultActionStop), to link itself. D, a dead
// process's node left abandoned on the lock from an earlier use of G's node,
// names G's node as its prev, with a next. G must wait for S rather than take
// D for a successor that died before linking: D's queue is over, and G went
// down it, past S, to a node that never links (the kflexfault stress with
// kills aimed at the swap window: a granter waited there forever, the lock
// held). S is let go; G grants it.
func TestLiveLinkBeforeStaleDeadSuccessor(t *testing.T) {
	sc := newScene(t, true)
	w, off, m := sc.w, sc.off, sc.m
	g := sc.tail
	offs := w.locks(t, 1)
	dead := w.killedSlot(t, offs[0])
	npp := w.h.Header().NodesPerProc
	d, y := dead*npp, dead*npp+1 // y: free, D's stale next
	w.setNode(d, QueueNode{Next: y + 1, State: NodeAbandoned, Prev: g, Lock: off})
	s := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped, "KFLEX_FAULT_ACTION="+FaultActionStop)
	si := w.queuedAfter(t, off, g)
	pid := s.cmd.Process.Pid
	require.Eventually(t, func() bool { return testutil.Stopped(t, pid) }, 20*time.Second, 100*time.Microsecond, "S stopped before its link")
	require.Zero(t, w.p.QueueNode(g-1).Next)

	m.Unlock()
	require.Eventually(t, func() bool { return DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).Locked }, 20*time.Second,
		10*time.Microsecond, "G took the lock")
	time.Sleep(5 * time.Millisecond) // G waits for S's link meanwhile
	syscall.Kill(pid, syscall.SIGCONT)
	select {
	case err := <-sc.first:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		atomic.StoreUint32(w.p.node(y).next(), si) // let G go on from where it waits
		<-sc.first
		t.Fatalf("G still waited 20 s later: it took the stale dead node for its successor")
	}
	assert.Equal(t, "got <nil>", s.line(t))
	require.True(t, s.wait(t).Success())
	assert.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(d).State, "D untouched")
	w.setNode(d, QueueNode{})
	w.setNode(y, QueueNode{})
	w.settled(t, off, 0)
}

// TestGranterStopsWhereRepairTookOver: G, a child, takes the lock and
// grants: its successor P is a live process's node that its waiter left,
// and behind P is Q, another. G skips P, frees it, and stops there
// (FaultSkipped, FaultActionStop), on its way to Q. Then D, a child's node,
// swaps the tail behind Q and is killed before linking itself
// (FaultSwapped: Q.next stays 0), and W, a waiter of ours, queues behind D.
// W's repair abandons D, looks through Q to P, finds P gone (freed, its
// owner alive: a live granter handing the head position past it), makes
// itself the head, and frees what it passed: Q and D. G, let go, reaches Q
// freed by W: the head position is W's, and G's grant is over. Before, G
// waited for Q's link forever, D (whom deadSuccessor would have found by
// its prev) being free: the lock stayed held and W waited for it (the
// kflexfault stress with kills aimed at FaultSwapped: an executor granter
// waiting on a free node, the lock's tail 0).
func TestGranterStopsWhereRepairTookOver(t *testing.T) {
	sc := newScene(t, false)
	w, off, m := sc.w, sc.off, sc.m
	g := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSkipped, "KFLEX_FAULT_ACTION="+FaultActionStop)
	gi := w.queuedAfter(t, off, 0)
	pa, paDone := w.attached(t)
	p := w.queueLeft(t, pa, off)
	tail := w.queuedAfter(t, off, gi)
	q := w.queueLeft(t, pa, off)
	tail = w.queuedAfter(t, off, tail)

	m.Unlock()
	pid := g.cmd.Process.Pid
	require.Eventually(t, func() bool { return testutil.Stopped(t, pid) }, 20*time.Second, 100*time.Microsecond,
		"G stopped after skipping P")
	require.True(t, pa.NodeFree(p), "P freed by G")
	require.Equal(t, uint32(NodeAbandoned), pa.QueueNode(q.Index).State, "Q not reached yet")

	x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
	requireKilled(t, x)
	di := w.queuedAfter(t, off, tail)
	require.Zero(t, pa.QueueNode(q.Index).Next, "D never linked")
	third := lockAsync(mutex(t, w.p, off), &sc.seq, 3)
	wn := w.queuedAfter(t, off, di)
	require.Eventually(t, func() bool { return w.p.QueueNode(wn-1).State == NodeHead }, 20*time.Second, 100*time.Microsecond,
		"W repaired past D and Q to P, gone, and made itself the head")
	// W frees what it passed after it says head (repair: head, then the walk).
	assert.Eventually(t, func() bool { return pa.NodeFree(q) }, 20*time.Second, 100*time.Microsecond, "Q freed by W")
	assert.Eventually(t, func() bool { return w.p.QueueNode(di-1).State == NodeFree }, 20*time.Second, 100*time.Microsecond,
		"D freed by W")

	// G stops at every skip: keep it going until W has the lock.
	cont := make(chan struct{})
	go func() {
		for {
			select {
			case <-cont:
				return
			case <-time.After(time.Millisecond):
				syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}()
	w.grantedOrRescued(t, third, q.Index, wn)
	close(cont)
	syscall.Kill(pid, syscall.SIGCONT)
	assert.Equal(t, "got <nil>", g.line(t))
	require.True(t, g.wait(t).Success())
	assert.Equal(t, []int{3}, sc.seq)
	pa.GiveNode(p)
	pa.GiveNode(q)
	paDone()
	w.settled(t, off, 0)
}

// TestDeadSuccessorFirstInQueue: G, the granter, a JIT extension (or a Go
// waiter), is the first in the queue; D, a child's node, swapped the tail
// behind it and was killed before linking itself (FaultSwapped); A, a live
// process's node, queued behind D, repaired past D (abandoning it) to G and
// was then left (a cancelled executor); W, the node of a child killed
// earlier (a lower owner slot than D's), queued behind A, moved its prev past
// A to G too, and died: the queue's tail. Both D and W are dead nodes naming
// G as their prev. G takes the lock and finds its successor by prev
// (deadSuccessor): it must take D, the first in the queue, and skip D, A
// and W. Before, it took the first it found in slot order, W, skipped W and
// ended the queue, and A, a live process's abandoned node, was never freed
// (the kflexfault stress with kills aimed at the swap window: leaked
// executors' nodes, traced to this link).
func TestDeadSuccessorFirstInQueue(t *testing.T) {
	eachGranter(t, func(t *testing.T, sc *scene, start func() granter) {
		w, off, m := sc.w, sc.off, sc.m
		npp := w.h.Header().NodesPerProc
		low := w.killedSlot(t, w.locks(t, 1)[0])
		gr := start()
		g := w.queuedAfter(t, off, 0)
		x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+FaultSwapped)
		requireKilled(t, x)
		d := w.queuedAfter(t, off, g)
		require.Greater(t, (d-1)/npp, low, "D's slot is after W's")
		require.Zero(t, w.p.QueueNode(g-1).Next, "D never linked")

		// A queues behind D, repairs past it to G, and leaves.
		pa, paDone := w.attached(t)
		a := pa.TakeNode()
		w.setNode(a.Index, QueueNode{State: NodeWaiting, Prev: d, Lock: off})
		word := w.h.Uint64(off)
		require.True(t, atomic.CompareAndSwapUint64(word, atomic.LoadUint64(word), atomic.LoadUint64(word)&^wordTailMask|uint64(a.Index+1)<<wordTailShift))
		atomic.StoreUint32(w.p.node(d-1).next(), a.Index+1)
		require.Zero(t, pa.LockCheck(w.h.Base()+off, 0, uint64(a.Index)+1, pa.Held()), "A waits behind G")
		require.Equal(t, g, pa.QueueNode(a.Index).Prev, "A repaired past D to G")
		require.Equal(t, uint32(NodeAbandoned), w.p.QueueNode(d-1).State, "D abandoned by A's repair")
		timeOut(t, pa, a)

		// W, of the earlier dead slot, behind A, its prev moved past A to G.
		wn := low * npp
		w.setNode(wn, QueueNode{State: NodeAbandoned, Prev: g, Lock: off})
		atomic.StoreUint32(pa.node(a.Index).next(), wn+1)
		for {
			old := atomic.LoadUint64(word)
			if atomic.CompareAndSwapUint64(word, old, old&^wordTailMask|uint64(wn+1)<<wordTailShift) {
				break
			}
		}

		m.Unlock()
		gr.acquired(t, w, off, "waited for G's link", func() {
			atomic.CompareAndSwapUint32(w.p.node(g-1).next(), 0, d)
		})
		assert.True(t, pa.NodeFree(a), "A freed by the granter that skipped it")
		assert.Equal(t, uint32(NodeFree), w.p.QueueNode(d-1).State, "D freed by the granter")
		assert.Equal(t, uint32(NodeFree), w.p.QueueNode(wn).State, "W freed by the granter")
		if pa.NodeFree(a) {
			pa.GiveNode(a)
		}
		paDone()
		w.settled(t, off, 0)
	})
}

// parkedAt waits until the node with index+1 idx sleeps (NodeParked).
func (w *world) parkedAt(t *testing.T, idx uint32) {
	t.Helper()
	require.Eventually(t, func() bool { return w.p.QueueNode(idx-1).State == NodeParked },
		10*time.Second, 50*time.Microsecond, "node %d never fell asleep", idx-1)
}

// TestKillGrantingOrUnlocking kills a child holding the lock as it hands it
// on to our waiter queued behind it:
//
//   - wake-pending: it unlocks with our waiter asleep as the queue's head,
//     sets the wake-pending bit and dies before the wake it promised. The
//     waiter, asleep on the holder's liveness word too, wakes at the death
//     and takes the lock, released normally (no owner died), and clears the
//     bits.
//   - grant-head-bits: granting our parked waiter the head, it sets the head
//     bits and dies before the grant. Our waiter, not yet the head, wakes at
//     the death and takes the position past the dead node and the lock over
//     (owner died); the bits the dead granter set do not survive it.
//   - skipped: it skips a dead waiter's node (another child, killed once
//     linked), frees it and dies before going on to our waiter. Our waiter,
//     whose predecessor is now a freed node of a dead process, takes the
//     head position and the lock over (owner died).
//
// The lock is then usable by everyone, and the tables are as they began.
func TestKillGrantingOrUnlocking(t *testing.T) {
	for _, c := range []struct {
		point     string
		env       []string
		dead      []string // children queued behind it, each killed at its point
		parked    bool     // our waiter asleep in the queue before we unlock
		headSleep bool     // our waiter asleep as the head before the child dies
		longPark  bool     // our waiter wakes only when woken: by a wake, or at the death
		ownerDied bool
	}{
		{point: FaultWakePending, env: []string{"KFLEX_HOLD=200ms"}, headSleep: true, longPark: true},
		{point: FaultGrantBits, parked: true, ownerDied: true},
		{point: FaultSkipped, dead: []string{FaultLinked}, ownerDied: true},
	} {
		t.Run(c.point, func(t *testing.T) {
			sc := newScene(t, false)
			w, off := sc.w, sc.off
			if c.longPark {
				// Not the 10 ms timeout: the waiter must still sleep when the
				// child unlocks (or the unlock has no wake to promise), and
				// must wake at the death, not at a timeout.
				w.p.park = time.Hour
			}
			x := w.startLocker(t, off, actOnce, append(c.env, "KFLEX_FAULT="+c.point)...)
			tail := w.queuedAfter(t, off, 0)
			for _, pt := range c.dead {
				d := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+pt)
				tail = w.queuedAfter(t, off, tail)
				requireKilled(t, d)
			}
			third := lockAsync(mutex(t, w.p, off), &sc.seq, 3)
			mine := w.queuedAfter(t, off, tail)
			if c.parked {
				w.parkedAt(t, mine)
			}
			sc.m.Unlock() // the child takes the lock and hands it on
			if c.headSleep {
				require.Eventually(t, func() bool {
					s := DecodeWord(atomic.LoadUint64(w.h.Uint64(off)))
					return s.Locked && s.HeadSleeping
				}, 10*time.Second, 50*time.Microsecond, "our waiter never slept as the head")
			}
			requireKilled(t, x)
			if err := result(t, third); c.ownerDied {
				require.ErrorIs(t, err, ErrOwnerDied)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, []int{3}, sc.seq)
			w.settled(t, off, 0)
		})
	}
}

// TestKillRepairing kills a child waiter in its repair around dead
// predecessors: after it marked a dead waiter's node abandoned (behind a
// waiter of ours that lives: FaultRepairAbandoned), or after it made itself
// the head, past a dead waiter and a dead head, and before it freed what it
// passed (FaultRepairHead). Our waiter behind it repairs around the dead
// nodes and gets the lock in turn (no owner died: we lived); nothing the dead
// children left stays behind.
func TestKillRepairing(t *testing.T) {
	for _, c := range []struct {
		point string
		ahead bool     // a waiter of ours queued first
		dead  []string // children queued next, each killed at its point
	}{
		{FaultRepairAbandoned, true, []string{FaultLinked}},
		{FaultRepairHead, false, []string{FaultHead, FaultLinked}},
	} {
		t.Run(c.point, func(t *testing.T) {
			sc := newScene(t, c.ahead)
			w, off, tail := sc.w, sc.off, sc.tail
			for _, pt := range append(c.dead, c.point) {
				x := w.startLocker(t, off, actOnce, "KFLEX_FAULT="+pt)
				tail = w.queuedAfter(t, off, tail)
				requireKilled(t, x)
			}
			third := lockAsync(mutex(t, w.p, off), &sc.seq, 3)
			w.queuedAfter(t, off, tail)
			sc.m.Unlock()
			if c.ahead {
				require.NoError(t, result(t, sc.first))
			}
			require.NoError(t, result(t, third))
			if c.ahead {
				assert.Equal(t, []int{1, 3}, sc.seq)
			} else {
				assert.Equal(t, []int{3}, sc.seq)
			}
			w.settled(t, off, 0)
		})
	}
}
