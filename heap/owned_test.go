package heap_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
)

// TestOwnedObjects: objects a process owns (more than one registry block of
// them) are freed one by one with FreeOwned and the rest at its detach; an
// offset it does not own is refused; a process with no owner slot cannot own.
func TestOwnedObjects(t *testing.T) {
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 4 << 20}})
	require.NoError(t, err)
	defer h.Close()
	_, err = h.AllocOwned(64)
	require.ErrorIs(t, err, heap.ErrNotOwner)
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	base := h.Stats().LiveObjects
	var offs []uint64
	for i := range 100 {
		off, err := h.AllocOwned(uint64(16 + i%3*1000))
		require.NoError(t, err)
		offs = append(offs, off)
	}
	for _, off := range offs[:40] {
		require.NoError(t, h.FreeOwned(off))
	}
	require.ErrorIs(t, h.FreeOwned(offs[0]), heap.ErrInvalidPointer, "freed already")
	plain, err := h.Alloc(64)
	require.NoError(t, err)
	require.ErrorIs(t, h.FreeOwned(plain), heap.ErrInvalidPointer, "not owned")
	assert.False(t, h.Owned(plain), "a plain allocation is nobody's")
	assert.True(t, h.Owned(offs[50]), "an owned object")
	assert.False(t, h.Owned(offs[0]), "freed with FreeOwned")
	block := *h.Uint64(h.OwnerRecord(p.Slot(), heap.OwnerOwned)) & (1<<48 - 1)
	assert.True(t, h.Owned(block), "a registry block")
	require.NoError(t, h.Free(plain))
	assert.Equal(t, base+60+4, h.Stats().LiveObjects, "60 owned objects and the four registry blocks (31 entries each) that 100 needed")
	rep, err := h.Inspect()
	require.NoError(t, err)
	assert.Equal(t, []heap.OwnedReport{{Slot: p.Slot(), Objects: 60}}, rep.Owned, "Inspect counts them")
	require.NoError(t, p.Detach())
	assert.Equal(t, base, h.Stats().LiveObjects, "the detach freed the rest and the registry")
	assert.False(t, h.Owned(offs[50]), "freed at the detach")
	_, err = h.Check()
	require.NoError(t, err)
}

const childOwner = "heap-owner"

// TestOwnedFreedAtDeath: a process SIGKILLed while it owns objects leaves
// them to the survivors: Reap frees them — after mcs.Reap gave the dead
// process's slot back, too — and nothing else (the objects it allocated
// without owning stay live).
func TestOwnedFreedAtDeath(t *testing.T) {
	if testutil.Role() == childOwner {
		h, _ := openAttached(t)
		for range 70 {
			_, err := h.AllocOwned(48)
			require.NoError(t, err)
		}
		plain := alloc64(t, h, 5)
		fmt.Printf("live %d\n", len(plain))
		time.Sleep(time.Minute)
		return
	}
	h, path := attachedHeap(t, heap.Params{Size: 8 << 20})
	base := int(h.Stats().LiveObjects)
	live := runStray(t, "TestOwnedFreedAtDeath", childOwner, path)
	live += runStray(t, "TestOwnedFreedAtDeath", childOwner, path)
	mcs.Reap(h) // the first child's slot may be free before its objects are
	reapAndCheck(t, h, base+live)
}
