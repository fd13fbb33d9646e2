package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
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
	assert.Contains(t, stdout, "1 allocator locks held by dead processes")

	poke(t, path, hdr.AllocOff, 0xdead_beef_dead_beef)
	code, stdout, stderr = kflexWithin(t, "heap", "info", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, fmt.Sprintf("does not parse: pages lock word at %#x: 0xdeadbeefdeadbeef has reserved bits", hdr.AllocOff))
	assert.Contains(t, stderr, "words that do not parse: 1;")
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
	assert.Contains(t, stdout, fmt.Sprintf("lock %#x: held by slot %d gen %d, queue tail node %d", off, p.Slot(), p.Gen()&0xfff, n.Index))
	m.Unlock()
	<-done
}

// TestHeapCheckOwnersAndNodes: garbage in the owner table or the queue node
// table, behind a valid header and allocator, is named (field and offset) by
// heap check and heap info, both exiting 1, and by an attach, which refuses
// a liveness word that is neither free, a thread ID nor the dead mark.
func TestHeapCheckOwnersAndNodes(t *testing.T) {
	owner := func(hdr heap.Header, s uint32, field uint64) uint64 {
		return hdr.OwnerOff + uint64(s)*heap.OwnerRecordSize + field
	}
	node := func(hdr heap.Header, i uint64) uint64 { return hdr.NodeOff + i*heap.NodeSize }
	for _, c := range []struct {
		name     string
		poke     func(path string, hdr heap.Header) (field string, at uint64)
		info     bool // heap info names it too (it checks what must parse whatever processes do)
		attachOK bool
	}{
		{"liveness word", func(path string, hdr heap.Header) (string, uint64) {
			poke(t, path, owner(hdr, 2, heap.OwnerLive), 0x0101_0101_0101_0101)
			return "owner slot 2 liveness word", owner(hdr, 2, heap.OwnerLive)
		}, true, false},
		{"dead mark with a TID", func(path string, hdr heap.Header) (string, uint64) {
			poke(t, path, owner(hdr, 0, heap.OwnerLive), 1234<<32|0x4000_04d2)
			return "owner slot 0 liveness word", owner(hdr, 0, heap.OwnerLive)
		}, true, false},
		{"live slot's PID", func(path string, hdr heap.Header) (string, uint64) {
			poke(t, path, owner(hdr, 1, heap.OwnerLive), 0xffff_ffff<<32|1234) // TID 1234, PID 2^32-1
			return "owner slot 1 PID", owner(hdr, 1, heap.OwnerPID)
		}, false, true},
		{"node state", func(path string, hdr heap.Header) (string, uint64) {
			poke(t, path, node(hdr, 5), 9<<32)
			return "queue node 5 state", node(hdr, 5) + 4
		}, true, true},
		{"node of a free slot", func(path string, hdr heap.Header) (string, uint64) {
			poke(t, path, node(hdr, 3), uint64(mcs.NodeWaiting)<<32)
			poke(t, path, node(hdr, 3)+8, 1)           // owner slot 0 + 1, free
			poke(t, path, node(hdr, 3)+16, hdr.Size-8) // in the last page, free
			return "queue node 3 owner", node(hdr, 3) + 8
		}, true, true},
		{"lock word held by nobody", func(path string, hdr heap.Header) (string, uint64) {
			poke(t, path, owner(hdr, 0, heap.OwnerLive), 1234<<32|1234) // a live-looking slot 0
			poke(t, path, node(hdr, 3), uint64(mcs.NodeWaiting)<<32)
			poke(t, path, node(hdr, 3)+8, 1)
			poke(t, path, node(hdr, 3)+16, hdr.Size-8)
			poke(t, path, hdr.Size-8, 4<<32|1) // locked, owner 0, tail node 3
			return "lock word queued on by node 3", hdr.Size - 8
		}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, hdr := usedHeapFile(t)
			field, at := c.poke(path, hdr)
			want := fmt.Sprintf("%s at %#x: ", field, at)

			code, stdout, stderr := kflexWithin(t, "heap", "check", path)
			assert.Equal(t, 1, code, stdout)
			assert.Contains(t, stderr, want)
			code, stdout, _ = kflexWithin(t, "heap", "check", "--json", path)
			assert.Equal(t, 1, code)
			var res checkResult
			require.NoError(t, json.Unmarshal([]byte(stdout), &res))
			assert.False(t, res.OK)
			assert.Equal(t, field, res.Field)
			assert.Equal(t, at, *res.Offset)

			code, stdout, stderr = kflexWithin(t, "heap", "info", path)
			if c.info {
				assert.Equal(t, 1, code)
				assert.Contains(t, stdout, "does not parse: "+want)
				assert.Contains(t, stderr, "words that do not parse: ")
			} else {
				assert.Equal(t, 0, code, stderr)
			}

			h, err := heap.Open(path, nil)
			if c.attachOK {
				require.NoError(t, err)
				h.Close()
				return
			}
			require.ErrorIs(t, err, heap.ErrCorruptHeap)
			assert.Contains(t, err.Error(), want)
		})
	}
}

// TestHeapInfoDeadHolder: a process that holds a lock with nobody queued is
// SIGKILLed. No queue node names the lock word, but the process's lock
// directory does: heap info shows it held by the dead slot, whose holder the
// next locker takes it over from, and still does after the slot is reaped
// (the entry stays until the lock is taken over). After the takeover, the
// word reads free. heap check names a directory entry outside the pages.
func TestHeapInfoDeadHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 1 << 20}})
	require.NoError(t, err)
	defer h.Close()
	off, err := h.Alloc(8)
	require.NoError(t, err)
	*h.Uint64(off) = 0

	holder := exec.Command(os.Args[0], "bench-holder", path, fmt.Sprint(off))
	out, err := holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, holder.Start())
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "held\n", line)
	require.NoError(t, holder.Process.Kill())
	holder.Wait()
	slot := mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Owner - 1
	require.True(t, mcs.WaitDeath(h, slot, 5*time.Second), "the kernel marked the holder's slot dead")

	code, stdout, stderr := kflexWithin(t, "heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "lock words: 1 listed by processes or queued on, 1 not free")
	assert.Regexp(t, fmt.Sprintf(`lock %#x: held by slot %d gen \d+ \(holder dead: the next locker takes it over`, off, slot), stdout)
	code, stdout, _ = kflexWithin(t, "heap", "info", "--json", path)
	require.Equal(t, 0, code)
	var in info
	require.NoError(t, json.Unmarshal([]byte(stdout), &in))
	require.Len(t, in.Busy, 1)
	assert.Equal(t, off, in.Busy[0].Offset)
	assert.Contains(t, in.Busy[0].Holder, "dead")
	code, _, stderr = kflexWithin(t, "heap", "check", path)
	assert.Equal(t, 0, code, stderr)

	p, err := mcs.Attach(h)
	require.NoError(t, err)
	defer p.Detach()
	require.Equal(t, 1, mcs.Reap(h), "the dead slot reaped")
	code, stdout, stderr = kflexWithin(t, "heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, fmt.Sprintf(`lock %#x: held by slot %d gen \d+ \(holder dead`, off, slot), stdout, "still listed once the slot is reaped")
	m, err := p.Mutex(off)
	require.NoError(t, err)
	require.ErrorIs(t, m.Lock(), mcs.ErrOwnerDied)
	m.Consistent()
	m.Unlock()
	code, stdout, stderr = kflexWithin(t, "heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "lock words: 1 listed by processes or queued on, 0 not free")
	code, _, stderr = kflexWithin(t, "heap", "check", path)
	assert.Equal(t, 0, code, stderr)

	// An entry naming no word in the pages: garbage.
	poke(t, path, h.LockDirEntry(5, 3), 7)
	code, _, stderr = kflexWithin(t, "heap", "check", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, fmt.Sprintf("owner slot 5 lock directory entry 3 at %#x: 0x7: offset 0x7 is not an 8-byte aligned word", h.LockDirEntry(5, 3)))
}
