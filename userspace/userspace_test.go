package userspace

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const (
	listNext  = 0
	listValue = 8
	listLen   = 1000
)

const childWalker = "userspace-walker"

// TestListAcrossViews builds a linked list in one process, walks it in a child
// process mapped at another base, lets the child append to it, and walks the
// whole list back here: every pointer crosses views through translation.
func TestListAcrossViews(t *testing.T) {
	if testutil.Role() == childWalker {
		walkerChild(t)
		return
	}
	path := filepath.Join(t.TempDir(), "heap")
	h, err := Create(path, 4<<20, nil)
	require.NoError(t, err)
	defer h.Close()
	mu, lockPtr, err := h.NewMutex()
	require.NoError(t, err)
	h.SetRoot(0, lockPtr)

	var head Ptr
	for i := listLen; i > 0; i-- {
		n, err := h.Alloc(16)
		require.NoError(t, err)
		h.StorePtr(n+listNext, head)
		*h.Uint64(n + listValue) = uint64(i)
		head = n
	}
	require.NoError(t, mu.Lock())
	h.SetRoot(1, head)
	mu.Unlock()

	childBase := uint64(0x3000_0000_0000)
	require.NotEqual(t, uint64(h.Base()), childBase)
	cmd := testutil.Child(t, "TestListAcrossViews", childWalker, "KFLEX_HEAP="+path,
		fmt.Sprintf("KFLEX_BASE=%d", childBase))
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), fmt.Sprintf("walked %d at base %#x", listLen, childBase))

	// The child appended listLen more nodes with values listLen+1...: walk all.
	require.NoError(t, mu.Lock())
	defer mu.Unlock()
	want := uint64(1)
	for n := h.Root(1); n != 0; n = h.LoadPtr(n + listNext) {
		require.Equal(t, want, *h.Uint64(n + listValue))
		want++
	}
	assert.Equal(t, uint64(2*listLen+1), want)
}

func walkerChild(t *testing.T) {
	var base uint64
	_, err := fmt.Sscan(os.Getenv("KFLEX_BASE"), &base)
	require.NoError(t, err)
	h, err := Attach(os.Getenv("KFLEX_HEAP"), &Options{MapAt: uintptr(base)})
	require.NoError(t, err)
	defer h.Close()
	require.Equal(t, Ptr(base), h.Base())
	mu, err := h.Mutex(h.Root(0))
	require.NoError(t, err)
	require.NoError(t, mu.Lock())
	defer mu.Unlock()
	n, last, count := h.Root(1), Ptr(0), 0
	for ; n != 0; n = h.LoadPtr(n + listNext) {
		require.True(t, uint64(n)&^(h.Size()-1) == base, "pointer %#x in our view", n)
		count++
		require.Equal(t, uint64(count), *h.Uint64(n + listValue))
		last = n
	}
	for i := range listLen {
		m, err := h.Alloc(16)
		require.NoError(t, err)
		h.StorePtr(m+listNext, 0)
		*h.Uint64(m + listValue) = uint64(count + i + 1)
		h.StorePtr(last+listNext, m)
		last = m
	}
	fmt.Printf("walked %d at base %#x\n", count, h.Base())
}

func TestAttachErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Attach(filepath.Join(dir, "missing"), nil)
	assert.ErrorIs(t, err, os.ErrNotExist)
	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte(strings.Repeat("x", 4096)), 0o600))
	_, err = Attach(bad, nil)
	assert.ErrorIs(t, err, heap.ErrNotHeap)
	assert.ErrorContains(t, err, "heap "+bad+": not a kflex heap")

	h, err := Create(filepath.Join(dir, "h"), 1<<20, nil)
	require.NoError(t, err)
	defer h.Close()
	assert.ErrorIs(t, h.Free(0x1234), heap.ErrInvalidPointer)
	_, err = h.Mutex(0x1000)
	assert.ErrorContains(t, err, "not in this view")
	p, err := h.Alloc(24)
	require.NoError(t, err)
	require.NoError(t, h.Free(p))
	assert.ErrorIs(t, h.Free(p), heap.ErrDoubleFree)
}
