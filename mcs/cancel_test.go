package mcs

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// standScene is a lock held by this process with F, a Go waiter of ours,
// queued (the head), N, a node of process pa's queued behind F as an
// executor's lock call queues it, and W, another Go waiter of ours, behind N.
// N's extension is then cancelled: Leave, which reports N not free yet.
type standScene struct {
	*scene
	pa     *Process
	paDone func()
	n      Node
	second chan error
}

func newStandScene(t *testing.T) *standScene {
	sc := newScene(t, true)
	pa, paDone := sc.w.attached(t)
	n := sc.w.queueBehind(t, pa, sc.off)
	second := lockAsync(mutex(t, sc.w.p, sc.off), &sc.seq, 2)
	sc.w.queuedAfter(t, sc.off, n.Index+1)
	require.False(t, pa.Leave(sc.off, uint64(n.Index)+1), "N is not the head: not free yet")
	return &standScene{scene: sc, pa: pa, paDone: paDone, n: n, second: second}
}

// TestLeaveStandsIn: N stays queued, waited in by a goroutine of pa's in the
// cancelled executor's place, never abandoned; when F's grant reaches it,
// the stand-in hands the head position on to W at once, and frees N. Before,
// Leave abandoned N for the granter to free, and with waiters dying around
// it, a cancelled executor's node was sometimes never freed.
func TestLeaveStandsIn(t *testing.T) {
	sc := newStandScene(t)
	for range 20 {
		s := sc.pa.QueueNode(sc.n.Index).State
		require.Contains(t, []uint32{NodeWaiting, NodeParked}, s, "N waits, stood in for")
		time.Sleep(time.Millisecond) // past the stand-in's spins, into its park
	}
	sc.m.Unlock()
	require.NoError(t, result(t, sc.first))
	require.NoError(t, result(t, sc.second))
	assert.Equal(t, []int{1, 2}, sc.seq, "F, then W: N's stand-in handed the head position on")
	require.Eventually(t, func() bool { return sc.pa.NodeFree(sc.n) }, 5*time.Second, time.Millisecond, "N freed by its stand-in")
	sc.pa.GiveNode(sc.n)
	sc.paDone()
	sc.w.settled(t, sc.off, 0)
}

// TestDetachAbandonsStandIn: pa detaches while N's stand-in waits. Detach
// stops the stand-in, which abandons N, and leaves pa's slot marked dead, not
// free: N is a dead process's node, which F's grant skips and frees on its
// way to W, and Reap frees the slot after it. A process attaching meanwhile
// gets another slot. Before, the slot was freed at once, and the next Attach
// queued N elsewhere while this queue still named it.
func TestDetachAbandonsStandIn(t *testing.T) {
	sc := newStandScene(t)
	sc.paDone()
	assert.Equal(t, uint32(NodeAbandoned), atomic.LoadUint32(sc.pa.node(sc.n.Index).state()), "N abandoned by its stopped stand-in")
	live := atomic.LoadUint32(sc.w.p.liveWord(sc.pa.Slot()))
	assert.True(t, live != 0 && slotDead(live), "pa's slot is marked dead while N is queued: %#x", live)
	pb, pbDone := sc.w.attached(t)
	assert.NotEqual(t, sc.pa.Slot(), pb.Slot(), "a new process does not get the slot whose node is still queued")
	pbDone()
	sc.m.Unlock()
	require.NoError(t, result(t, sc.first))
	require.NoError(t, result(t, sc.second))
	assert.Equal(t, []int{1, 2}, sc.seq)
	sc.w.settled(t, sc.off, 0)
}

// queueBehind queues a node of p's on the lock at off as lockQueued does
// (prev written, tail swapped, linked behind its predecessor, which there
// must be), waiting, and returns it.
func (w *world) queueBehind(t *testing.T, p *Process, off uint64) Node {
	t.Helper()
	n := p.TakeNode()
	me := n.Index + 1
	w.setNode(n.Index, QueueNode{State: NodeWaiting, Lock: off})
	word := w.h.Uint64(off)
	for {
		old := atomic.LoadUint64(word)
		atomic.StoreUint32(p.node(n.Index).prev(), wordTail(old))
		if atomic.CompareAndSwapUint64(word, old, old&^wordTailMask|uint64(me)<<wordTailShift) {
			require.NotZero(t, wordTail(old), "queued behind somebody")
			atomic.StoreUint32(p.node(wordTail(old)-1).next(), me)
			return n
		}
	}
}

// TestLeaveHeadClearsHeadBits: N, the head, left asleep-and-woken bits in
// the word (head sleeping, wake pending) when its extension is cancelled;
// behind it S waits as a bytecode waiter does, which never clears them.
// Leave hands the head position to S and clears the bits, as a head that
// runs does. Before, they stayed set, and newcomers barged past S until it
// took the lock.
func TestLeaveHeadClearsHeadBits(t *testing.T) {
	sc := newScene(t, false)
	w, off := sc.w, sc.off
	pa, paDone := w.attached(t)
	n, s := pa.TakeNode(), pa.TakeNode()
	w.setNode(n.Index, QueueNode{Next: s.Index + 1, State: NodeHead, Lock: off})
	w.setNode(s.Index, QueueNode{State: NodeWaiting, Prev: n.Index + 1, Lock: off})
	word := w.h.Uint64(off)
	atomic.OrUint64(word, wordHeadBits|uint64(s.Index+1)<<wordTailShift)

	require.True(t, pa.Leave(off, uint64(n.Index)+1), "the head leaves at once")
	assert.Zero(t, atomic.LoadUint64(word)&wordHeadBits, "no head bits left for newcomers to barge on")
	assert.Equal(t, uint32(NodeHead), pa.QueueNode(s.Index).State, "S is the head")
	assert.True(t, pa.NodeFree(n))

	w.setNode(s.Index, QueueNode{})
	atomic.AndUint64(word, ^uint64(wordTailMask))
	sc.m.Unlock()
	pa.GiveNode(n)
	pa.GiveNode(s)
	paDone()
	w.settled(t, off, 0)
}
