package heap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/sys/vm"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func newTestHeap(t *testing.T, size uint64) *Heap {
	t.Helper()
	h, err := Create(filepath.Join(t.TempDir(), "heap"), &Options{Params: Params{Size: size}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

func TestCreateOpenAligned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap")
	h, err := Create(path, &Options{Params: Params{Size: 4 << 20}})
	require.NoError(t, err)
	defer h.Close()
	assert.Zero(t, h.Base()%h.Size(), "base %#x not aligned to %#x", h.Base(), h.Size())
	assert.Equal(t, h.Base(), h.CanonBase())
	*h.Uint64(h.Header().PagesOff) = 0xfeedface

	h2, err := Open(path, nil)
	require.NoError(t, err)
	defer h2.Close()
	assert.NotEqual(t, h.Base(), h2.Base(), "a second mapping in one process needs its own range")
	assert.Zero(t, h2.Base()%h2.Size())
	assert.Equal(t, h.Header(), h2.Header())
	assert.Equal(t, uint64(0xfeedface), *h2.Uint64(h.Header().PagesOff), "both views share the file")

	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, int64(4<<20), st.Size())
}

// TestRestoreHeader: a header overwritten through the mapping (an
// extension's NULL-pointer store) makes the file unopenable; RestoreHeader
// puts back its bytes, and only those: the root words stay as written.
func TestRestoreHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap")
	h, err := Create(path, &Options{Params: Params{Size: 4 << 20}})
	require.NoError(t, err)
	defer h.Close()
	h2, err := Open(path, nil)
	require.NoError(t, err)
	defer h2.Close()
	assert.False(t, h.RestoreHeader(), "an intact header is left alone")
	assert.False(t, h2.RestoreHeader(), "as another process's copy has it too")

	*h.Root(0) = 0x1234
	*h.Uint64(0) = 0x4141414141414141 // the magic
	*h.Uint64(hdrSize) = 0            // and a field
	_, err = Open(path, nil)
	require.ErrorIs(t, err, ErrNotHeap)
	assert.True(t, h2.RestoreHeader())
	h3, err := Open(path, nil)
	require.NoError(t, err, "openable again")
	defer h3.Close()
	assert.Equal(t, h.Header(), h3.Header())
	assert.Equal(t, uint64(0x1234), *h3.Root(0), "the root words are not the header's")
	assert.False(t, h.RestoreHeader())
}

func TestMapAtForcedBase(t *testing.T) {
	h := newTestHeap(t, 1<<20)
	// Far from Go's heap (0xc0_0000_0000) and from mmap's top-down area.
	at := uintptr(0x2000_0000_0000)
	h2, err := Open(h.Name(), &Options{MapAt: at})
	require.NoError(t, err)
	defer h2.Close()
	assert.Equal(t, uint64(at), h2.Base())

	_, err = Open(h.Name(), &Options{MapAt: at})
	assert.ErrorContains(t, err, "address range in use")
	_, err = Open(h.Name(), &Options{MapAt: at + 4096})
	assert.ErrorContains(t, err, "not aligned to heap size")
}

func TestMemfd(t *testing.T) {
	h, err := CreateMemfd("kflex-test", &Options{Params: Params{Size: 2 << 20}})
	require.NoError(t, err)
	defer h.Close()
	h2, err := OpenFD(h.Fd(), nil)
	require.NoError(t, err)
	defer h2.Close()
	*h.Uint32(h.Header().PagesOff) = 7
	assert.Equal(t, uint32(7), *h2.Uint32(h.Header().PagesOff))
	// Sealed: nobody can shrink it under a mapping. (Not through an os.File of
	// h's descriptor: its finalizer would close the descriptor under h.)
	assert.ErrorIs(t, unix.Ftruncate(h.Fd(), 4096), unix.EPERM)
}

// TestGuardRegions writes just outside both ends of the heap, as a guarded eBPF
// access with an extreme offset would, and checks the process survives and the
// heap did not change.
func TestGuardRegions(t *testing.T) {
	h := newTestHeap(t, 1<<20)
	first := bytes.Clone(h.Bytes(0, PageSize))
	last := bytes.Clone(h.Bytes(h.Size()-PageSize, PageSize))
	base := h.At(0)
	for _, off := range []int{-32768, -1, int(h.Size()), int(h.Size()) + 32767} {
		p := (*byte)(unsafe.Add(base, off))
		*p = 0xa5
		assert.Equal(t, byte(0xa5), *p, "guard at %d is scratch memory", off)
	}
	assert.Equal(t, first, h.Bytes(0, PageSize))
	assert.Equal(t, last, h.Bytes(h.Size()-PageSize, PageSize))
	// A second view of the same file sees none of it either.
	h2, err := Open(h.Name(), nil)
	require.NoError(t, err)
	defer h2.Close()
	assert.Equal(t, first, h2.Bytes(0, PageSize))
	assert.Equal(t, last, h2.Bytes(h.Size()-PageSize, PageSize))
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// goodHeaderFile returns a valid 1 MiB heap file's bytes.
func goodHeaderFile(t *testing.T) []byte {
	h := newTestHeap(t, 1<<20)
	return bytes.Clone(h.Bytes(0, h.Size()))
}

func TestOpenBadFiles(t *testing.T) {
	good := goodHeaderFile(t)
	reheader := func(mod func(*Header)) []byte {
		b := bytes.Clone(good)
		hdr, err := ParseHeader(b, int64(len(b)))
		require.NoError(t, err)
		mod(&hdr)
		hdr.encode(b)
		return b
	}
	cases := []struct {
		name    string
		content []byte
		want    error
		text    string
	}{
		{"empty", nil, ErrTruncated, "0 bytes"},
		{"not a heap", bytes.Repeat([]byte("garbage!"), 1<<17), ErrNotHeap, "bad magic"},
		{"other version", func() []byte { b := bytes.Clone(good); b[hdrVersion] = 9; return b }(), ErrVersion, fmt.Sprintf("file has 9, this build reads %d", Version)},
		{"corrupt byte", func() []byte { b := bytes.Clone(good); b[hdrMaxProcs]++; return b }(), ErrCorrupt, "checksum"},
		{"truncated", good[:len(good)/2], ErrTruncated, "524288 bytes, header says 1048576"},
		{"header only", good[:PageSize], ErrTruncated, "4096 bytes, header says 1048576"},
		{"too long", append(bytes.Clone(good), make([]byte, 4096)...), ErrFileTooLong, "1052672 bytes"},
		{"size not a power of two", reheader(func(h *Header) { h.Size = 3 << 20 }), ErrSize, "not a power of two"},
		{"size too small", reheader(func(h *Header) { h.Size = 1 << 19 }), ErrSize, "outside"},
		{"layout tampered", reheader(func(h *Header) { h.PagesOff += PageSize }), ErrCorrupt, "does not follow"},
		{"misaligned canonical base", reheader(func(h *Header) { h.CanonBase = 4096 }), ErrCorrupt, "canonical base"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.content)
			h, err := Open(path, nil)
			require.Error(t, err)
			assert.Nil(t, h)
			assert.ErrorIs(t, err, tc.want)
			assert.ErrorContains(t, err, "heap "+path+": ")
			assert.ErrorContains(t, err, tc.text)
			var fe *FileError
			assert.True(t, errors.As(err, &fe))
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := Open(filepath.Join(t.TempDir(), "nope"), nil)
		assert.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Open(t.TempDir(), nil)
		assert.Error(t, err)
	})
	t.Run("exists", func(t *testing.T) {
		path := writeFile(t, good)
		_, err := Create(path, nil)
		assert.ErrorIs(t, err, os.ErrExist)
	})
	t.Run("bad create size", func(t *testing.T) {
		_, err := Create(filepath.Join(t.TempDir(), "h"), &Options{Params: Params{Size: 3 << 20}})
		assert.ErrorContains(t, err, "size 3145728 is not a power of two")
		_, err = Create(filepath.Join(t.TempDir(), "h"), &Options{Params: Params{Size: 1 << 37}})
		assert.ErrorContains(t, err, "outside")
	})
}

func FuzzParseHeader(f *testing.F) {
	h, err := CreateMemfd("fuzz", &Options{Params: Params{Size: 1 << 20}})
	if err != nil {
		f.Fatal(err)
	}
	good := bytes.Clone(h.Bytes(0, hdrEnd))
	h.Close()
	f.Add(good, int64(1<<20))
	f.Add(good[:64], int64(1<<20))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		hdr, err := ParseHeader(b, size)
		if err != nil {
			return
		}
		// Anything accepted must be a layout the allocator can live in.
		assert.NoError(t, hdr.Params.validate())
		assert.Equal(t, uint64(size), hdr.Size)
		assert.Less(t, hdr.PagesOff, hdr.Size)
	})
}

// TestCreateIn: a heap formatted in memory someone else mapped (as in a BPF
// arena) is found by OpenIn, shares its words, and leaves the memory mapped on
// Close; bad memory gets clear errors.
func TestCreateIn(t *testing.T) {
	const size = 4 << 20
	base, err := vm.Reserve(size, GuardSize, 0)
	require.NoError(t, err)
	defer vm.Release(base, size, GuardSize)
	require.NoError(t, vm.MapScratch(unsafe.Add(base, -GuardSize), size+2*GuardSize))

	_, err = OpenIn(base, size, "lent")
	assert.ErrorIs(t, err, ErrNotHeap, "zeroed memory is not a heap")
	_, err = CreateIn(unsafe.Add(base, 4096), size, "lent", nil)
	assert.ErrorContains(t, err, "not aligned")

	h, err := CreateIn(base, size, "lent", nil)
	require.NoError(t, err)
	assert.False(t, h.SharedFutexes())
	assert.Equal(t, -1, h.Fd())
	off, err := h.Alloc(64)
	require.NoError(t, err)
	*h.Uint64(off) = 42
	h2, err := OpenIn(base, size, "lent")
	require.NoError(t, err)
	assert.Equal(t, h.Header(), h2.Header())
	assert.Equal(t, uint64(42), *h2.Uint64(off))
	require.NoError(t, h2.Close())
	require.NoError(t, h.Close())
	assert.Equal(t, uint64(42), *(*uint64)(unsafe.Add(base, off)), "Close leaves lent memory mapped")
}
