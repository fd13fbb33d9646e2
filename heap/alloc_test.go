package heap

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func requireNoLive(t *testing.T, h *Heap) {
	t.Helper()
	s := h.Stats()
	require.Zero(t, s.LiveObjects, "live objects left: %+v", s)
	require.Zero(t, s.LiveBytes)
}

func TestAllocSizes(t *testing.T) {
	h := newTestHeap(t, 4<<20)
	type obj struct{ off, size uint64 }
	var objs []obj
	for size := uint64(1); size <= 3*PageSize; size += size/3 + 1 {
		off, err := h.Alloc(size)
		require.NoError(t, err, "size %d", size)
		require.GreaterOrEqual(t, off, h.Header().PagesOff)
		require.LessOrEqual(t, off+size, h.Size())
		require.Zero(t, off%8)
		if size > MaxSmall {
			require.Zero(t, off%PageSize, "large objects are page runs")
		}
		objs = append(objs, obj{off, size})
		b := h.Bytes(off, size)
		for i := range b {
			b[i] = byte(len(objs))
		}
	}
	// No object overlaps another: each still holds its own fill.
	for i, o := range objs {
		for _, v := range h.Bytes(o.off, o.size) {
			require.Equal(t, byte(i+1), v, "object %d (size %d at %#x) overwritten", i, o.size, o.off)
		}
	}
	s := h.Stats()
	assert.Equal(t, uint64(len(objs)), s.LiveObjects)
	for _, o := range objs {
		require.NoError(t, h.Free(o.off))
	}
	requireNoLive(t, h)
	assert.Equal(t, s.Pages-s.FreePages-s.LargePages, h.Stats().Pages-h.Stats().FreePages,
		"freed runs went back to the page pool")
}

func TestAllocErrors(t *testing.T) {
	h := newTestHeap(t, 1<<20)
	small, err := h.Alloc(48)
	require.NoError(t, err)
	large, err := h.Alloc(3 * PageSize)
	require.NoError(t, err)
	fresh, err := h.Alloc(8)
	require.NoError(t, err)

	_, err = h.Alloc(0)
	assert.ErrorIs(t, err, ErrBadSize)
	_, err = h.Alloc(h.Size() + 1)
	assert.ErrorIs(t, err, ErrBadSize)

	for name, off := range map[string]uint64{
		"header":           0,
		"metadata":         h.Header().PageMapOff,
		"inside an object": small + 8,
		"unaligned":        small + 1,
		"inside a run":     large + PageSize,
		"past the end":     h.Size(),
		"far past the end": 1 << 60,
	} {
		assert.ErrorIs(t, h.Free(off), ErrInvalidPointer, name)
	}
	never := small + 48 // carved but never allocated
	assert.ErrorIs(t, h.Free(never+0), ErrDoubleFree, "object never handed out")

	require.NoError(t, h.Free(small))
	assert.ErrorIs(t, h.Free(small), ErrDoubleFree)
	require.NoError(t, h.Free(large))
	err = h.Free(large)
	assert.ErrorIs(t, err, ErrDoubleFree)
	assert.ErrorContains(t, err, fmt.Sprintf("%#x", large))
	require.NoError(t, h.Free(fresh))
	requireNoLive(t, h)
}

func TestAllocOutOfMemory(t *testing.T) {
	h := newTestHeap(t, 1<<20)
	var offs []uint64
	for {
		off, err := h.Alloc(2 * PageSize)
		if err != nil {
			require.ErrorIs(t, err, ErrOutOfMemory)
			break
		}
		offs = append(offs, off)
	}
	require.NotEmpty(t, offs)
	require.Less(t, h.Stats().FreePages, uint64(2))
	_, err := h.Alloc(64)
	require.ErrorIs(t, err, ErrOutOfMemory, "no page left for a slab")
	for _, off := range offs {
		require.NoError(t, h.Free(off))
	}
	off, err := h.Alloc(64)
	require.NoError(t, err, "memory is back")
	require.NoError(t, h.Free(off))
	requireNoLive(t, h)
}

// TestAllocHammer runs goroutines that allocate, fill, check and free objects of
// random sizes; any overlap between two live objects shows as a wrong fill.
func TestAllocHammer(t *testing.T) {
	h := newTestHeap(t, 16<<20)
	workers, rounds := 8, 20000
	if testing.Short() {
		workers, rounds = 4, 5000
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			type obj struct{ off, size, tag uint64 }
			var live []obj
			for i := range rounds {
				if len(live) > 0 && (rng.IntN(2) == 0 || len(live) > 64) {
					j := rng.IntN(len(live))
					o := live[j]
					live[j] = live[len(live)-1]
					live = live[:len(live)-1]
					if got := binary.LittleEndian.Uint64(h.Bytes(o.off, 8)); got != o.tag {
						errs <- fmt.Errorf("worker %d: object %#x tag %#x, want %#x", w, o.off, got, o.tag)
						return
					}
					if err := h.Free(o.off); err != nil {
						errs <- err
						return
					}
					continue
				}
				size := uint64(8 + rng.IntN(600))
				if rng.IntN(50) == 0 {
					size = uint64(MaxSmall + rng.IntN(3*PageSize))
				}
				off, err := h.Alloc(size)
				if err != nil {
					errs <- err
					return
				}
				tag := uint64(w)<<32 | uint64(i)
				binary.LittleEndian.PutUint64(h.Bytes(off, 8), tag)
				live = append(live, obj{off, size, tag})
			}
			for _, o := range live {
				if err := h.Free(o.off); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	requireNoLive(t, h)
}

// Alloc+Free of a 64-byte object: the heap's allocator against Go's. Go's figure
// leaves out the collection that the garbage eventually costs.
func BenchmarkAllocFree64(b *testing.B) {
	b.Run("kflex", func(b *testing.B) {
		h, err := CreateMemfd("bench", &Options{Params: Params{Size: 64 << 20}})
		require.NoError(b, err)
		defer h.Close()
		for b.Loop() {
			off, err := h.Alloc(64)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.Free(off); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			sink = new([64]byte)
		}
	})
}

var sink *[64]byte

// TestInFlightObjects builds the two states a process killed on the allocation
// fast path leaves — Alloc marked the top object and did not pop it, Free pushed
// an object and did not clear its bit — in a cache slot whose owner is dead, and
// checks that Check reads both as free and that draining frees them.
func TestInFlightObjects(t *testing.T) {
	h := newTestHeap(t, 1<<20)
	a, err := h.Alloc(64)
	require.NoError(t, err)
	b, err := h.Alloc(64)
	require.NoError(t, err)
	slot := h.allocator().slots[0].off
	cc := slot + cacheSlotHead + uint64(classOf(64))*cacheClassSize
	n := *h.Uint32(cc + ccCount)
	// The stack's top object marked allocated but not popped.
	top := *h.Uint64(cc + ccEntries + uint64(n-1)*8)
	require.NoError(t, h.markBit(top))
	// The slot's owner is dead: an owner slot that nobody holds.
	*h.Uint64(slot + csOwner) = attachedIdent(3, 7)
	sum, err := h.Check()
	require.NoError(t, err)
	assert.Equal(t, 1, sum.DeadCaches)
	assert.Equal(t, uint64(2), sum.Live)
	k, err := h.drain(slot)
	require.NoError(t, err)
	assert.Equal(t, int(n), k)
	*h.Uint64(slot + csOwner) = h.allocator().id.Load().word

	// b pushed by Free but its bit not yet cleared.
	*h.Uint64(cc + ccEntries) = b
	*h.Uint32(cc + ccCount) = 1
	*h.Uint64(slot + csOwner) = attachedIdent(3, 7)
	_, err = h.Check()
	require.NoError(t, err)
	_, err = h.drain(slot)
	require.NoError(t, err)
	*h.Uint64(slot + csOwner) = h.allocator().id.Load().word
	sum, err = h.Check()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), sum.Live)
	require.NoError(t, h.Free(a))
	requireNoLive(t, h)
	assert.ErrorIs(t, h.Free(b), ErrDoubleFree)
}

func (h *Heap) markBit(off uint64) error {
	w, bit := h.objBits(off)
	if atomic.OrUint64(w, bit)&bit != 0 {
		return ErrCorruptHeap
	}
	return nil
}

// TestClassTakeoverWaitsForPageLock: a class lock whose holder is dead is
// taken over only after the page lock is settled (settlePages). When the page
// lock cannot be had (its holder neither releases it nor can be declared
// dead), the allocation fails with ErrLockStuck and leaves the class lock as
// it was, the dead holder's, for a later taker; once the page lock is free,
// that taker takes the class lock over.
func TestClassTakeoverWaitsForPageLock(t *testing.T) {
	defer SetStuckAfter(50 * time.Millisecond)()
	h := newTestHeap(t, 4<<20)
	class := h.classState(classOf(256), csLock)
	pages := h.hdr.AllocOff + asPageLock
	dead := attachedIdent(3, 1) | lwHeld                            // slot 3's record is free: dead
	stuck := uint64(identUnattached)<<lwIdentShift | 1<<32 | lwHeld // pid 1, unattached: unknown
	atomic.StoreUint64(h.Uint64(class), dead)
	atomic.StoreUint64(h.Uint64(pages), stuck)

	_, err := h.Alloc(256)
	require.ErrorIs(t, err, ErrLockStuck)
	assert.ErrorContains(t, err, "256-byte class lock")
	assert.Equal(t, dead, atomic.LoadUint64(h.Uint64(class)), "the class lock changed hands without the page lock settled")
	assert.Zero(t, h.load(class+lrTakeovers))

	atomic.StoreUint64(h.Uint64(pages), 0)
	off, err := h.Alloc(256)
	require.NoError(t, err)
	require.NoError(t, h.Free(off))
	assert.Equal(t, uint64(1), h.load(class+lrTakeovers))
	assert.Zero(t, atomic.LoadUint64(h.Uint64(class)))
	_, err = h.Check()
	require.NoError(t, err)
}
