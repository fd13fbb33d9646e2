package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
)

// usedHeapFile creates a heap file at a new path, allocates in it, and closes it.
func usedHeapFile(t *testing.T) (string, heap.Header) {
	path := filepath.Join(t.TempDir(), "h")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 2 << 20}})
	require.NoError(t, err)
	for i := range 50 {
		off, err := h.Alloc(uint64(16 + i*8))
		require.NoError(t, err)
		if i%2 == 0 {
			require.NoError(t, h.Free(off))
		}
	}
	_, err = h.Alloc(3 * heap.PageSize)
	require.NoError(t, err)
	hdr := h.Header()
	require.NoError(t, h.Close())
	return path, hdr
}

// poke writes the 8-byte little-endian v at off of the file at path.
func poke(t *testing.T, path string, off, v uint64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	_, err = f.WriteAt(b[:], int64(off))
	require.NoError(t, err)
}

// kflexWithin runs kflex with args and fails if it does not answer in time.
func kflexWithin(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, stdout, stderr = kflex(args...)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("kflex %v hangs", args)
	}
	return
}

func TestHeapCheck(t *testing.T) {
	path, hdr := usedHeapFile(t)
	code, stdout, stderr := kflexWithin(t, "heap", "check", path)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `^`+path+`: ok: \d+ of \d+ pages free, 1 large runs \(3 pages\), \d+ slabs: 25 live objects`, stdout)

	code, stdout, _ = kflexWithin(t, "heap", "check", "--json", path)
	require.Equal(t, 0, code)
	assertSnakeCase(t, stdout)
	var res checkResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.True(t, res.OK)
	assert.Equal(t, uint64(25), res.Summary.Live)

	// The first allocatable page claims to head a run of 7 pages.
	page := hdr.PagesOff / heap.PageSize
	entry := hdr.PageMapOff + page*4
	poke(t, path, entry, 0x8000_0007)
	code, stdout, stderr = kflexWithin(t, "heap", "check", path)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, fmt.Sprintf("heap check %s: page map entry of page %d at %#x: ", path, page+1, entry+4))
	code, stdout, _ = kflexWithin(t, "heap", "check", "--json", path)
	assert.Equal(t, 1, code)
	assertSnakeCase(t, stdout)
	res = checkResult{}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assert.False(t, res.OK)
	assert.Equal(t, entry+4, *res.Offset)
	assert.Equal(t, fmt.Sprintf("page map entry of page %d", page+1), res.Field)
}

// TestHeapInfoAllocatorLocks: heap info shows the allocator's locks, a lock
// held by a dead holder, and garbage in a lock word, without taking a lock
// and without hanging.
func TestHeapInfoAllocatorLocks(t *testing.T) {
	path, hdr := usedHeapFile(t)
	code, stdout, stderr := kflexWithin(t, "heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "allocator locks: 18, 0 held")
	assert.Contains(t, stdout, "allocator cache slots: 0 claimed, 0 of dead processes")
	assert.Contains(t, stdout, "queued lock nodes: 0")

	// The page lock (the first word of the allocator state) held by owner slot
	// 3, generation 7, which nobody holds: a dead holder (heap/mutex.go).
	poke(t, path, hdr.AllocOff, 4<<16|7<<32|1)
	code, stdout, stderr = kflexWithin(t, "heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "allocator locks: 18, 1 held")
	assert.Contains(t, stdout, "pages: held by slot 3 gen 7 (dead)")
	code, stdout, _ = kflexWithin(t, "heap", "check", path)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "1 locks held by dead processes")

	poke(t, path, hdr.AllocOff, 0xdead_beef_dead_beef)
	code, stdout, stderr = kflexWithin(t, "heap", "info", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, fmt.Sprintf("does not parse: pages lock word at %#x: 0xdeadbeefdeadbeef has reserved bits", hdr.AllocOff))
	assert.Contains(t, stderr, "1 allocator words do not parse")
	code, _, stderr = kflexWithin(t, "heap", "check", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "pages lock word")
}

// TestNodeLayout checks heap info's reading of the node table against mcs's
// own: a goroutine queues behind a held lock.
func TestNodeLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 1 << 20}})
	require.NoError(t, err)
	defer h.Close()
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	defer p.Detach()
	off, err := h.Alloc(64)
	require.NoError(t, err)
	*h.Uint64(off) = 0
	m, err := p.Mutex(off)
	require.NoError(t, err)
	m.Lock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w, _ := p.Mutex(off)
		if w.Lock() != nil {
			return
		}
		w.Unlock()
	}()
	var nodes []queuedNode
	require.Eventually(t, func() bool {
		nodes, _ = queues(h)
		return len(nodes) == 1
	}, 5*time.Second, time.Millisecond)
	n := nodes[0]
	q := p.QueueNode(n.Index)
	assert.Equal(t, q.Lock, n.Lock)
	assert.Equal(t, q.Owner, n.Owner)
	assert.Equal(t, q.Next, n.Next)
	assert.Equal(t, off, n.Lock)
	assert.Equal(t, p.Slot()+1, n.Owner)
	code, stdout, stderr := kflexWithin(t, "heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("on lock %#x, next none linked", off))
	assert.Contains(t, stdout, fmt.Sprintf("lock %#x: held by slot %d, queue tail node %d", off, p.Slot(), n.Index))
	m.Unlock()
	<-done
}
