package mcs

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/sys/futex"
)

// The tests here build, node by node (setNode), queues that deaths and
// departures leave behind, and check that the waiter behind them repairs
// its way to the lock and frees what nobody else will.

// attached is another attach of this test's heap: a second live owner slot,
// as another process would have, detached with the test (or by done).
func (w *world) attached(t *testing.T) (p *Process, done func()) {
	t.Helper()
	p, err := Attach(w.h)
	require.NoError(t, err)
	done = func() { p.Detach() }
	t.Cleanup(done)
	return p, done
}

// left is a node of p's, queued on the lock at off behind the node with
// index+1 prev and then left as a kernel waiter that times out leaves it:
// abandoned, its owner alive.
func (w *world) left(t *testing.T, p *Process, off uint64, prev, next uint32) Node {
	t.Helper()
	n := p.TakeNode()
	w.setNode(n.Index, QueueNode{Next: next, State: NodeWaiting, Prev: prev, Lock: off})
	timeOut(t, p, n)
	return n
}

// timeOut abandons p's waiting node n as the kernel form of mcs_lock does
// when its deadline passes (mcs_lock_abandon): the one way left for a live
// process's node to be abandoned in a queue (Leave stands in for a
// cancelled executor instead).
func timeOut(t *testing.T, p *Process, n Node) {
	t.Helper()
	require.True(t, atomic.CompareAndSwapUint32(p.node(n.Index).state(), nodeWaiting, nodeAbandoned), "the node was waiting")
}

// killedSlot is the owner slot of a child that attached and was SIGKILLed
// (holding the spare lock at off, which nobody needs).
func (w *world) killedSlot(t *testing.T, off uint64) uint32 {
	t.Helper()
	c := w.startLocker(t, off, actHold)
	require.Equal(t, "held", c.line(t))
	c.kill()
	require.True(t, WaitDeath(w.h, c.slot, 5*time.Second) || slotDead(atomic.LoadUint32(w.p.liveWord(c.slot))))
	return c.slot
}

// repaired waits (boundedly) for a lockAsync's result on the lock at off,
// of a waiter that only its own repair can make the head. Past the bound it
// grants the waiter (the tail) itself, so that a failing test leaves no
// waiter behind on a heap its cleanup unmaps.
func (w *world) repaired(t *testing.T, off uint64, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err, "W gets the lock")
	case <-time.After(10 * time.Second):
		n := w.p.node(wordTail(atomic.LoadUint64(w.h.Uint64(off))) - 1)
		atomic.StoreUint32(n.state(), nodeHead)
		futex.Wake(n.state(), 1)
		<-done
		t.Fatalf("W still waited 10 s later, for a predecessor that will never grant it")
	}
}

// TestRepairPastGonePredecessor: a Go waiter W queues behind A, a live
// process's node that its waiter left (abandoned); A's predecessor P has
// left the queue since, without granting: freed, or queued on another lock,
// its slot alive (in another process, as a reaped slot's may be). The lock
// is free. W looks through A to P, finds P gone, and makes itself the head:
// it gets the lock, and frees A. Before, P's live slot made W wait for a
// grant from P forever.
func TestRepairPastGonePredecessor(t *testing.T) {
	for _, requeued := range []bool{false, true} {
		name := map[bool]string{false: "freed", true: "requeued"}[requeued]
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 1<<20)
			offs := w.locks(t, 2)
			off, other := offs[0], offs[1]
			pp, ppDone := w.attached(t)
			pa, paDone := w.attached(t)
			pn := pp.TakeNode()
			p := QueueNode{Lock: off} // freed: what its holder left
			if requeued {
				p = QueueNode{State: NodeWaiting, Lock: other}
			}
			w.setNode(pn.Index, p)
			a := w.left(t, pa, off, pn.Index+1, 0)
			if !requeued {
				w.setNode(pn.Index, QueueNode{Next: a.Index + 1, Lock: off})
			}
			atomic.StoreUint64(w.h.Uint64(off), uint64(a.Index+1)<<wordTailShift) // free, A the tail
			before := pp.QueueNode(pn.Index)

			var seq []int
			w.repaired(t, off, lockAsync(mutex(t, w.p, off), &seq, 1))
			assert.Equal(t, []int{1}, seq)
			assert.True(t, pa.NodeFree(a), "A freed by W, which skipped it")
			assert.Equal(t, before, pp.QueueNode(pn.Index), "P untouched")

			w.setNode(pn.Index, QueueNode{}) // P leaves the other lock's queue
			pp.GiveNode(pn)
			pa.GiveNode(a)
			ppDone()
			paDone()
			w.settled(t, off, 0)
		})
	}
}

// TestRepairFreesAbandonedAhead: D, a dead child's node, is the queue's head;
// behind it A, a live process's node its waiter left; behind A a waiter
// whose prev has already been moved past A to D, as repair moves it, by a
// skipper that kept the list of what it skipped only in its memory:
//
//   - executor: the waiter itself, an executor's lock call (HelperLockCheck
//     keeps no list between calls), with W's prev at D;
//   - skipper: S, a waiter of the dead child's, died after it skipped A; a
//     Go waiter W queues behind S.
//
// The lock is free. W repairs past D and makes itself the head, and frees
// the abandoned nodes between D and itself: A, whose live owner will never
// free it, included. Before, A stayed abandoned for good.
func TestRepairFreesAbandonedAhead(t *testing.T) {
	for _, via := range []string{"executor", "skipper"} {
		t.Run(via, func(t *testing.T) {
			w, off, _, d := deadSlotScene(t) // D, and S after it
			pa, paDone := w.attached(t)
			a := w.left(t, pa, off, d+1, 0)
			w.setNode(d, QueueNode{Next: a.Index + 1, State: NodeHead, Lock: off})

			if via == "executor" {
				n := w.p.TakeNode()
				w.setNode(a.Index, QueueNode{Next: n.Index + 1, State: NodeAbandoned, Prev: d + 1, Lock: off})
				w.setNode(n.Index, QueueNode{State: NodeWaiting, Prev: d + 1, Lock: off})
				atomic.StoreUint64(w.h.Uint64(off), uint64(n.Index+1)<<wordTailShift)
				require.Equal(t, uint64(1), w.p.LockCheck(w.h.Base()+off, 0, uint64(n.Index)+1, w.p.Held()), "W made itself the head")
				assert.Equal(t, uint32(NodeHead), w.p.QueueNode(n.Index).State)
				assert.True(t, pa.NodeFree(a), "A freed by W")
				require.True(t, w.p.Leave(off, uint64(n.Index)+1), "W, the head and the tail, ends the queue")
				w.p.GiveNode(n)
			} else {
				s := d + 1
				w.setNode(a.Index, QueueNode{Next: s + 1, State: NodeAbandoned, Prev: d + 1, Lock: off})
				w.setNode(s, QueueNode{State: NodeWaiting, Prev: d + 1, Lock: off})
				atomic.StoreUint64(w.h.Uint64(off), uint64(s+1)<<wordTailShift)
				var seq []int
				w.repaired(t, off, lockAsync(mutex(t, w.p, off), &seq, 1))
				assert.Equal(t, []int{1}, seq)
				assert.True(t, pa.NodeFree(a), "A freed by W")
				assert.Equal(t, uint32(NodeFree), w.p.QueueNode(s).State, "S freed by W")
			}
			assert.Equal(t, uint32(NodeFree), w.p.QueueNode(d).State, "D freed by W")
			if pa.NodeFree(a) {
				pa.GiveNode(a)
			}
			paDone()
			w.settled(t, off, 0)
		})
	}
}

// TestRepairFreesFromFirstDeadSuccessor: G, a dead child's node, is the
// queue's head, and its next is 0: D, behind it, swapped the tail and died
// before linking itself. Behind D, A, a live process's node its waiter
// left after repairing past D (abandoned) to G; behind A, V, the node of a
// child killed earlier (a lower owner slot than D's), which moved its prev
// past A to G too and died; behind V our waiter N. N repairs: past V to G,
// a dead head, which it replaces; the walk that frees what it passed starts
// at G's successor, found by prev (deadSuccessor), and must start at D, the
// first in the queue, not V, the first in slot order: from V it freed only
// V, and A, a live process's abandoned node, was never freed (the
// kflexfault stress with kills aimed at the swap window, traced: leaked
// executors' nodes). N is a Go waiter (skipper) or an executor's node
// (LockCheck).
func TestRepairFreesFromFirstDeadSuccessor(t *testing.T) {
	for _, via := range []string{"executor", "skipper"} {
		t.Run(via, func(t *testing.T) {
			w := newWorld(t, 1<<20)
			offs := w.locks(t, 3)
			off := offs[0]
			npp := w.h.Header().NodesPerProc
			v := w.killedSlot(t, offs[1]) * npp
			g := w.killedSlot(t, offs[2]) * npp
			d := g + 1
			require.Greater(t, d, v, "D's slot is after V's")
			pa, paDone := w.attached(t)
			a := w.left(t, pa, off, g+1, 0)
			w.setNode(g, QueueNode{State: NodeHead, Lock: off})
			w.setNode(d, QueueNode{Next: a.Index + 1, State: NodeAbandoned, Prev: g + 1, Lock: off})
			n := w.p.TakeNode()
			w.setNode(a.Index, QueueNode{Next: v + 1, State: NodeAbandoned, Prev: g + 1, Lock: off})
			w.setNode(v, QueueNode{Next: n.Index + 1, State: NodeAbandoned, Prev: g + 1, Lock: off})

			if via == "executor" {
				w.setNode(n.Index, QueueNode{State: NodeWaiting, Prev: v + 1, Lock: off})
				atomic.StoreUint64(w.h.Uint64(off), uint64(n.Index+1)<<wordTailShift)
				require.Equal(t, uint64(1), w.p.LockCheck(w.h.Base()+off, 0, uint64(n.Index)+1, w.p.Held()), "N made itself the head")
				assert.True(t, pa.NodeFree(a), "A freed by N")
				require.True(t, w.p.Leave(off, uint64(n.Index)+1), "N, the head and the tail, ends the queue")
				w.p.GiveNode(n)
			} else {
				// The Go waiter queues with a node of its own: N's place is
				// taken by a node of the process that the test sets up as
				// lockQueued would (its prev V, the tail swapped to it).
				w.p.GiveNode(n)
				atomic.StoreUint64(w.h.Uint64(off), uint64(v+1)<<wordTailShift)
				var seq []int
				w.repaired(t, off, lockAsync(mutex(t, w.p, off), &seq, 1))
				assert.Equal(t, []int{1}, seq)
				assert.True(t, pa.NodeFree(a), "A freed by N")
			}
			for _, x := range []struct {
				name string
				idx  uint32
			}{{"G", g}, {"D", d}, {"V", v}} {
				assert.Equal(t, uint32(NodeFree), w.p.QueueNode(x.idx).State, "%s freed by N", x.name)
			}
			if pa.NodeFree(a) {
				pa.GiveNode(a)
			}
			paDone()
			w.settled(t, off, 0)
		})
	}
}

// TestRepairLeavesRequeuedPredecessor: W, a Go waiter, was granted the head
// by E, an executor of its own process, which freed its node and at once
// queued it again on the same lock for its next lock call (mcs_lock writes
// the node's state, then its prev: "empty" while prev is still 0 from its
// previous call, "behind" once it names W). W's repair, looking at E just
// after the grant, must not mistake that next use for a node that left the
// queue and then act on it: before, repair judged E gone on one look at
// its state (free) and chose what to do on a second (waiting), freeing E's
// queued node as a dead head's (empty) or abandoning it (behind): E then
// held the lock waiting forever for a successor's link, while W's next
// lock call sat as the head behind it (the pingpong hang of `kflex bench
// lock`; TestPingPong). E's node flips between the two uses here while W
// repairs; any change E did not make fails the test.
func TestRepairLeavesRequeuedPredecessor(t *testing.T) {
	for _, ePrev := range []string{"empty", "behind"} {
		t.Run(ePrev, func(t *testing.T) {
			w := newWorld(t, 1<<20)
			off := w.locks(t, 1)[0]
			m := mutex(t, w.p, off)
			wn, en := w.p.TakeNode(), w.p.TakeNode()
			w.setNode(wn.Index, QueueNode{State: NodeHead, Prev: en.Index + 1, Lock: off})
			q := QueueNode{Lock: off}
			if ePrev == "behind" {
				q.Prev = wn.Index + 1
			}
			w.setNode(en.Index, q)
			atomic.StoreUint64(w.h.Uint64(off), uint64(wn.Index+1)<<wordTailShift)

			es := w.p.node(en.Index).state()
			stop, touched := make(chan struct{}), make(chan uint32, 1)
			flipped := make(chan struct{})
			go func() {
				defer close(flipped)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if !atomic.CompareAndSwapUint32(es, nodeFree, nodeWaiting) ||
						!atomic.CompareAndSwapUint32(es, nodeWaiting, nodeFree) {
						touched <- atomic.LoadUint32(es)
						return
					}
				}
			}()
			n := w.p.node(wn.Index)
			var skipped []uint32
			for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end) && len(touched) == 0; {
				for range 1000 {
					m.repair(n, &skipped, Polled)
				}
			}
			close(stop)
			<-flipped
			select {
			case s := <-touched:
				t.Errorf("W's repair changed E's queued node to state %d", s)
			default:
			}
			got := w.p.QueueNode(wn.Index)
			assert.Equal(t, uint32(NodeHead), got.State, "W stays the head")
			assert.Equal(t, en.Index+1, got.Prev, "W looked through nothing")
			assert.Empty(t, skipped)

			w.setNode(en.Index, QueueNode{})
			w.setNode(wn.Index, QueueNode{})
			atomic.StoreUint64(w.h.Uint64(off), 0)
			w.p.GiveNode(en)
			w.p.GiveNode(wn)
		})
	}
}

// TestGranterStopsAtFreedNode: G, the granter, a JIT extension (or a Go
// waiter), takes the lock; its successor P is a live process's node that
// its waiter left, and P's next is Q, which W, a waiter behind, has freed:
// W looked through Q to P just after G had freed P on an earlier walk
// (TestGranterStopsWhereRepairTookOver has the race for real), found P
// gone, made itself the head, and freed what it passed. Q's next is 0 (the
// node behind it died before linking itself, and W freed that one too). G
// skips P and reaches Q, free: the head position is W's, and G's grant is
// over. Before, G waited for Q's link forever: the JIT in its skip loop,
// which nothing cancels, the Go granter in successor.
func TestGranterStopsAtFreedNode(t *testing.T) {
	eachGranter(t, func(t *testing.T, sc *scene, start func() granter) {
		w, off, m := sc.w, sc.off, sc.m
		gr := start()
		g := w.queuedAfter(t, off, 0)
		pa, paDone := w.attached(t)
		q, wn := pa.TakeNode(), w.p.TakeNode()
		p := w.left(t, pa, off, g, q.Index+1)
		atomic.StoreUint32(w.p.node(g-1).next(), p.Index+1) // P's link
		w.setNode(q.Index, QueueNode{Prev: p.Index + 1, Lock: off})
		w.setNode(wn.Index, QueueNode{State: NodeHead, Prev: p.Index + 1, Lock: off})
		word := w.h.Uint64(off)
		for {
			old := atomic.LoadUint64(word)
			if atomic.CompareAndSwapUint64(word, old, old&^wordTailMask|uint64(wn.Index+1)<<wordTailShift) {
				break
			}
		}

		m.Unlock()
		gr.acquired(t, w, off, "waited for Q's link", func() {
			atomic.StoreUint32(pa.node(q.Index).next(), wn.Index+1) // let G go on to W
		})
		assert.True(t, pa.NodeFree(p), "P freed by G")
		assert.Equal(t, uint32(NodeHead), w.p.QueueNode(wn.Index).State, "W still the head")
		assert.Equal(t, DecodeWord(uint64(wn.Index+1)<<wordTailShift), DecodeWord(atomic.LoadUint64(word)),
			"the lock free, W the tail")

		// W takes the lock, the tail, and ends the queue; it unlocks.
		w.setNode(wn.Index, QueueNode{})
		atomic.StoreUint64(word, 0)
		w.setNode(p.Index, QueueNode{})
		pa.GiveNode(p)
		pa.GiveNode(q)
		w.p.GiveNode(wn)
		paDone()
		w.settled(t, off, 0)
	})
}
