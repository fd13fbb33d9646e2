package main

import (
	"fmt"
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
	if s.Locked {
		d = "held"
		if s.Owner != 0 {
			d += fmt.Sprintf(" by slot %d", s.Owner-1)
		}
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
