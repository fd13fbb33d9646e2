package stress

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/userspace"
)

// attachAndWait is the "stress-attach" child: it attaches to the heap at
// KFLEX_STRESS_HEAP, says so, and waits to be killed.
func attachAndWait() {
	uh, err := userspace.Attach(os.Getenv("KFLEX_STRESS_HEAP"), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	fmt.Println("attached", uh.Process().Slot())
	time.Sleep(time.Minute)
	os.Exit(5)
}

// TestReapAbandonedPair is the queue state that TestKills and kflex stress
// left behind now and then (seed 1796644813939283502 of TestKills, among
// others; the OS's timing decides): two nodes of a dead process, abandoned,
// the first naming the second as its next and the second the first as its
// prev, on a lock with no queue. It arises when a live waiter X abandons two
// dead predecessors in a row (repair: each waiting node of a dead process is
// marked abandoned, X's prev moves past them, and they go on X's skipped
// list, freed only when X becomes the head) and X is killed before it
// becomes the head: X's successor repairs around X alone, and nobody is left
// to free the pair. mcs.Reap used to count each as referenced by the other
// (a non-free node on the same lock whose next or prev named it), so neither
// was ever freed and the dead process's owner slot was never reclaimed: each
// occurrence leaked an owner slot for good, and Attach failed with ErrNoSlot
// once MaxProcs of them had accumulated. The same rule stranded dead head
// nodes that dead abandoned nodes named (seen in the 10,000-kill run of seed
// 17: nodes in state head of two dead slots on a free lock). Reap now keeps a
// dead node only while the live queue can reach it (from the lock's tail and
// from live processes' queued nodes, along next and non-head prev), so it
// frees the pair and gives the slot back.
func TestReapAbandonedPair(t *testing.T) {
	if testutil.Role() == "stress-attach" {
		attachAndWait()
	}
	path, h, p := attachedHeap(t)
	lock, err := h.Alloc(8)
	require.NoError(t, err)
	*h.Uint64(lock) = 0

	child := testutil.Child(t, "TestReapAbandonedPair", "stress-attach", "KFLEX_STRESS_HEAP="+path)
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	sc := bufio.NewScanner(out)
	require.True(t, sc.Scan())
	var slot uint32
	_, err = fmt.Sscanf(sc.Text(), "attached %d", &slot)
	require.NoError(t, err)
	require.NoError(t, child.Process.Kill())
	child.Wait()
	require.True(t, mcs.WaitDeath(h, slot, 5*time.Second))

	// The pair as a killed X leaves it: a (prev: a node of nobody's, next: b),
	// b (prev: a, next: X's node, since freed by X's successor).
	hdr := h.Header()
	a, b := slot*hdr.NodesPerProc, slot*hdr.NodesPerProc+1
	set := func(i, next, prev uint32) {
		n := hdr.NodeOff + uint64(i)*heap.NodeSize
		atomic.StoreUint32(h.Uint32(n+0), next)
		atomic.StoreUint32(h.Uint32(n+8), slot+1)
		atomic.StoreUint32(h.Uint32(n+12), prev)
		atomic.StoreUint64(h.Uint64(n+16), lock)
		atomic.StoreUint32(h.Uint32(n+4), uint32(mcs.NodeAbandoned))
	}
	other := p.Slot() * hdr.NodesPerProc // free nodes of this process
	set(a, b+1, other+1)
	set(b, other+2, a+1)

	mcs.Reap(h)
	assert.Equal(t, uint32(mcs.NodeFree), p.QueueNode(a).State, "node a freed")
	assert.Equal(t, uint32(mcs.NodeFree), p.QueueNode(b).State, "node b freed")
	assert.Len(t, mcs.Owners(h), 1, "the dead slot given back: %+v", mcs.Owners(h))
	m, err := p.Mutex(lock)
	require.NoError(t, err)
	require.NoError(t, m.Lock())
	m.Unlock()
}

// attachedHeap is a new 8 MiB heap file and this process attached to it,
// both closed when the test ends.
func attachedHeap(t *testing.T) (string, *heap.Heap, *mcs.Process) {
	path := filepath.Join(t.TempDir(), "heap")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	t.Cleanup(func() { p.Detach() })
	return path, h, p
}
