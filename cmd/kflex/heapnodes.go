package main

import (
	"fmt"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
)

// heap info reads the MCS node table without attaching (mcs.Process.QueueNode
// needs an attached process, and attaching writes to the owner table). The
// offsets are mcs/node.go's; TestNodeLayout checks them against QueueNode.
const (
	nodeNext  = 0
	nodeState = 4
	nodeOwner = 8
	nodeLock  = 16
)

// queuedNode is a queue node that is not free.
type queuedNode struct {
	Index uint32 `json:"index"`
	Slot  uint32 `json:"slot"` // the owner slot whose range holds it
	State string `json:"state"`
	Owner uint32 `json:"owner"` // waiter's owner slot + 1
	Lock  uint64 `json:"lock"`  // offset of the lock word it queues on
	Next  uint32 `json:"next"`  // index + 1 of its successor, 0 if none linked
}

func (n queuedNode) nextString() string {
	if n.Next == 0 {
		return "none linked"
	}
	return fmt.Sprintf("node %d", n.Next-1)
}

// queuedLock is a lock word some node queues on, decoded.
type queuedLock struct {
	Offset uint64 `json:"offset"`
	Raw    uint64 `json:"raw"`
	Word   string `json:"word"`
}

var nodeStates = map[uint32]string{mcs.NodeWaiting: "waiting", mcs.NodeParked: "parked",
	mcs.NodeHead: "head", mcs.NodeAbandoned: "abandoned"}

// queues lists the heap's queue nodes that are not free, and the lock words
// they queue on: one read of each node, bounded by the node table.
func queues(h *heap.Heap) ([]queuedNode, []queuedLock) {
	hdr := h.Header()
	var nodes []queuedNode
	locks := map[uint64]bool{}
	for i := range hdr.MaxProcs * hdr.NodesPerProc {
		at := hdr.NodeOff + uint64(i)*heap.NodeSize
		st := atomic.LoadUint32(h.Uint32(at + nodeState))
		if st == mcs.NodeFree {
			continue
		}
		name, ok := nodeStates[st]
		if !ok {
			name = fmt.Sprintf("state %d (unknown)", st)
		}
		n := queuedNode{Index: i, Slot: i / hdr.NodesPerProc, State: name,
			Owner: atomic.LoadUint32(h.Uint32(at + nodeOwner)), Lock: atomic.LoadUint64(h.Uint64(at + nodeLock)),
			Next: atomic.LoadUint32(h.Uint32(at + nodeNext))}
		nodes = append(nodes, n)
		if n.Lock%8 == 0 && n.Lock < hdr.Size {
			locks[n.Lock] = true
		}
	}
	var words []queuedLock
	for off := range locks {
		w := atomic.LoadUint64(h.Uint64(off))
		words = append(words, queuedLock{Offset: off, Raw: w, Word: describeWord(mcs.DecodeWord(w))})
	}
	sort.Slice(words, func(i, j int) bool { return words[i].Offset < words[j].Offset })
	return nodes, words
}

func describeWord(s mcs.LockState) string {
	d := "free"
	switch {
	case s.Abandoned:
		d = "held, ABANDONED by a cancelled extension (the next locker takes it over: owner died)"
	case s.Locked:
		d = "held"
		if s.Owner != 0 {
			d += fmt.Sprintf(" by slot %d gen %d", s.Owner-1, s.Gen)
		}
	case s.OwnerDied:
		d = "NOT RECOVERABLE (a holder that took it over unlocked without Consistent)"
		s.OwnerDied = false
	}
	if s.Tail != 0 {
		d += fmt.Sprintf(", queue tail node %d", s.Tail-1)
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{s.OwnerDied, "owner died"}, {s.HeadSleeping, "head sleeping"}, {s.WakePending, "wake pending"}} {
		if f.on {
			d += ", " + f.name
		}
	}
	return d
}

// lockWord is a lock word that a lock directory or a queued node names, and
// that is not free: held, queued on, or not recoverable.
type lockWord struct {
	Offset uint64 `json:"offset"`
	Raw    uint64 `json:"raw"`
	Word   string `json:"word"`
	Holder string `json:"holder,omitempty"` // alive, or dead (the next locker takes it over)
}

// lockWords reads the lock words the owner slots' lock directories and the
// queued nodes name (queued), once each, and returns those that are not
// free, how many words were read, how many of those read as no lock word (a
// listed word whose object was freed since, and that holds other data now),
// and the slots whose directory is full.
func lockWords(h *heap.Heap, queued []queuedLock) (busy []lockWord, read, other int, full []uint32) {
	offs, full := mcs.DirectoryLocks(h)
	for _, q := range queued {
		offs = append(offs, q.Offset)
	}
	slices.Sort(offs)
	offs = slices.Compact(offs)
	for _, off := range offs {
		w := atomic.LoadUint64(h.Uint64(off))
		if w == 0 {
			continue
		}
		if !mcs.ReadsAsLock(h, w) {
			other++
			continue
		}
		s := mcs.DecodeWord(w)
		l := lockWord{Offset: off, Raw: w, Word: describeWord(s)}
		if s.Locked && !s.Abandoned { // a holder in the owner table (ReadsAsLock)
			l.Holder = "alive"
			if mcs.HolderDead(h, w) {
				l.Holder = "dead: the next locker takes it over (owner died)"
			}
		}
		busy = append(busy, l)
	}
	return busy, len(offs), other, full
}
