package heap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// usedHeap returns the bytes of a 1 MiB heap whose allocator has been used:
// live small and large objects, free lists, cached objects, a free run.
func usedHeap(t testing.TB) []byte {
	h, err := CreateMemfd("used", &Options{Params: Params{Size: 1 << 20}})
	require.NoError(t, err)
	defer h.Close()
	var offs []uint64
	for i := range 400 {
		off, err := h.Alloc(uint64(8 + i%5*40))
		require.NoError(t, err)
		offs = append(offs, off)
	}
	for _, n := range []uint64{2, 3, 1} {
		off, err := h.Alloc(n * PageSize)
		require.NoError(t, err)
		offs = append(offs, off)
	}
	for i, off := range offs {
		if i%3 != 0 {
			require.NoError(t, h.Free(off))
		}
	}
	_, err = h.Check()
	require.NoError(t, err)
	return bytes.Clone(h.Bytes(0, h.Size()))
}

// heapWith maps a new memfd heap holding b.
func heapWith(t testing.TB, b []byte) *Heap {
	h, err := CreateMemfd("copy", &Options{Params: Params{Size: uint64(len(b))}})
	require.NoError(t, err)
	copy(h.Bytes(0, h.Size()), b)
	return h
}

// within runs f and fails the test if it takes longer than d.
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not answer within %v", what, d)
	}
}

// TestCorruptBody writes garbage into single allocator words behind a valid
// header: attaching, Check and allocation each give an error that names the
// word, and nothing hangs.
func TestCorruptBody(t *testing.T) {
	defer SetStuckAfter(100 * time.Millisecond)()
	good := usedHeap(t)
	hdr, err := ParseHeader(good, int64(len(good)))
	require.NoError(t, err)
	c48 := func(f uint64) uint64 { return hdr.AllocOff + asClasses + uint64(classOf(48))*classStateSz + f }
	cases := []struct {
		name   string
		off    uint64
		val    uint64
		attach string // error from attaching, or "" when the word parses alone
		check  string // Check's error
	}{
		{"page lock garbage", hdr.AllocOff + asPageLock, 0xdead_beef_0000_0f0f, "pages lock word at", "pages lock word at"},
		{"page lock owner outside the table", hdr.AllocOff + asPageLock, 0x1_00ff_0001, "owner slot field 255", "owner slot field 255"},
		{"redo log too long", hdr.AllocOff + asPageLock + lrLogLen, 99, "pages redo log length", "pages redo log"},
		{"free list head outside", c48(csFreeHead), 12, "class 48 free list head", "class 48 free list"},
		{"cache count", hdr.CacheOff + cacheSlotHead + ccCount, 1000, "cache slot 0 class 8 count", "cache slot 0 class 8 count"},
		{"cache owner", hdr.CacheOff + csOwner, 0x1234, "cache slot 0 owner", "cache slot 0 owner"},
		{"free pages counter", hdr.AllocOff + asFreePages, 3, "", "free pages counter"},
		{"free list cycle", 0, 0, "", "class 48 free list"},
		{"page map", hdr.PageMapOff + (hdr.PagesOff/PageSize+1)*4, pmLarge | 7, "", "page map entry of page"},
		{"object bit", hdr.ObjBitsOff + 8, 1, "", "object bitmap"},
		{"carved counter", c48(csCarved), 1 << 40, "", "class 48 carved counter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(good)
			if tc.name == "free list cycle" {
				head := binary.LittleEndian.Uint64(b[c48(csFreeHead):])
				require.NotZero(t, head)
				binary.LittleEndian.PutUint64(b[head:], head)
			} else {
				binary.LittleEndian.PutUint64(b[tc.off:], tc.val)
			}
			h := heapWith(t, b)
			defer h.Close()
			_, err := OpenFD(h.Fd(), nil)
			if tc.attach != "" {
				assert.ErrorContains(t, err, "heap state: ")
				assert.ErrorContains(t, err, tc.attach)
				assert.ErrorIs(t, err, ErrCorruptHeap)
			} else {
				assert.NoError(t, err)
			}
			within(t, 5*time.Second, "Check", func() {
				_, err := h.Check()
				assert.ErrorContains(t, err, tc.check)
				var fe *FieldError
				assert.ErrorAs(t, err, &fe)
			})
			within(t, 5*time.Second, "Inspect", func() { h.Inspect() })
			within(t, 10*time.Second, "allocation", func() {
				for _, size := range []uint64{64, 8, 3 * PageSize} {
					if off, err := h.Alloc(size); err == nil {
						h.Free(off)
					}
				}
			})
		})
	}
}

// FuzzHeapInspect writes random bytes into the body of a used heap behind its
// valid header — anywhere in the allocator's metadata or its first slabs — and
// requires Inspect, Check and the attach check to answer, and an allocation
// to answer or fail, each within a time bound.
func FuzzHeapInspect(f *testing.F) {
	defer SetStuckAfter(50 * time.Millisecond)()
	good := usedHeap(f)
	hdr, err := ParseHeader(good, int64(len(good)))
	if err != nil {
		f.Fatal(err)
	}
	span := hdr.PagesOff - HeaderSize + 2*slabBytes
	for _, at := range []uint64{hdr.OwnerOff, hdr.AllocOff, hdr.AllocOff + asClasses, hdr.CacheOff, hdr.PageMapOff, hdr.ObjBitsOff, hdr.PagesOff} {
		f.Add(uint32(at-HeaderSize), bytes.Repeat([]byte{0xff}, 64))
		f.Add(uint32(at-HeaderSize+8), []byte{1, 0, 1, 0, 2, 0, 0, 0, 7})
	}
	f.Fuzz(func(t *testing.T, at uint32, data []byte) {
		defer SetStuckAfter(50 * time.Millisecond)()
		b := bytes.Clone(good)
		off := HeaderSize + uint64(at)%span
		copy(b[off:min(off+uint64(len(data)), uint64(len(b)))], data)
		h := heapWith(t, b)
		defer within(t, 10*time.Second, "Close", func() { h.Close() })
		within(t, 5*time.Second, "reading", func() {
			rep, ierr := h.Inspect()
			_, cerr := h.Check()
			serr := h.checkState()
			if serr != nil {
				assert.Error(t, ierr, "attach refuses (%v), Inspect finds nothing", serr)
				assert.Error(t, cerr, "attach refuses (%v), Check passes", serr)
			}
			if ierr != nil {
				assert.Error(t, cerr, "Inspect finds what does not parse (%v), Check passes", ierr)
			}
			_ = fmt.Sprint(rep)
		})
		within(t, 10*time.Second, "allocation", func() {
			for _, size := range []uint64{64, 3 * PageSize} {
				if off, err := h.Alloc(size); err == nil {
					h.Free(off)
				}
			}
		})
	})
}
