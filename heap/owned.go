package heap

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Owned objects are allocations that belong to the attached process that
// made them and to nobody else — the runtime's executor stacks and rseq
// areas, its extensions' globals — and that must not outlive it. A process
// that detaches frees them (UnbindOwner); one that dies cannot, so it leaves a
// list of them where a survivor finds it: its owner record's owned field
// names a chain of registry blocks, each listing objects by offset.
//
//	owner record, offset 32: owned u64  gen<<48 | offset of the first block (0: none)
//	block (ownedBlockSize bytes): next u64 (offset of the next block, 0: last),
//	                              then ownedPerBlock u64 entries (object offset, 0: empty)
//
// Only the owner writes its registry, so a Go mutex orders its writers; a
// reaper claims a dead owner's whole registry with one compare-and-swap of the
// owned field, so two reapers never free the same objects. The generation in
// the field keeps a reaper that read a dead occupant's registry from claiming
// a later occupant's, should that one's first block land at the same offset.
//
// A kill can strand one object: between the allocation and its entry (Alloc
// first, then the entry), or between clearing an entry and the free (entry
// first, then Free). The other orders would let a reaper free an object that
// was never, or is no longer, the dead process's.
const (
	OwnerOwned     = 32
	ownedBlockSize = 256
	ownedPerBlock  = ownedBlockSize/8 - 1
	ownedOffMask   = 1<<48 - 1
)

// ErrNotOwner is AllocOwned's error in a process that holds no owner slot
// (BindOwner): an owned object needs an owner that a survivor can see die.
var ErrNotOwner = errors.New("heap: owned allocation by a process with no owner slot")

// owned is this process's registry (its own view of the blocks).
type owned struct {
	mu     sync.Mutex
	slot   uint32              // whose registry; valid while bound
	where  map[uint64]uint64   // object offset -> offset of its entry
	blocks map[uint64]struct{} // the registry's blocks
	empty  []uint64            // entries free for reuse
}

// Owned reports whether off is this process's own: an object AllocOwned
// returned and FreeOwned has not freed, or a block of their registry. A
// plain Free of one (an extension's kflex_free of a global, say) would leave
// the registry naming memory the heap may give to someone else, which
// FreeOwned, UnbindOwner or a reaper would then free under them.
func (h *Heap) Owned(off uint64) bool {
	o := &h.allocator().owned
	o.mu.Lock()
	defer o.mu.Unlock()
	_, obj := o.where[off]
	_, block := o.blocks[off]
	return obj || block
}

// AllocOwned is Alloc for an object that belongs to this process: UnbindOwner
// frees it if FreeOwned did not, and if the process dies first, Reap (in any
// process) does.
func (h *Heap) AllocOwned(size uint64) (uint64, error) {
	a := h.allocator()
	slot, gen, ok := a.boundSlot()
	if !ok {
		return 0, ErrNotOwner
	}
	off, err := h.Alloc(size)
	if err != nil {
		return 0, err
	}
	o := &a.owned
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.empty) == 0 {
		if err := h.growOwned(slot, gen); err != nil {
			h.Free(off)
			return 0, err
		}
	}
	e := o.empty[len(o.empty)-1]
	o.empty = o.empty[:len(o.empty)-1]
	atomic.StoreUint64(h.Uint64(e), off)
	o.where[off] = e
	return off, nil
}

// FreeOwned frees an object AllocOwned returned. An offset it did not return
// is an error, and changes nothing.
func (h *Heap) FreeOwned(off uint64) error {
	o := &h.allocator().owned
	o.mu.Lock()
	e, ok := o.where[off]
	if ok {
		delete(o.where, off)
		atomic.StoreUint64(h.Uint64(e), 0)
		o.empty = append(o.empty, e)
	}
	o.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: offset %#x is not an owned object of this process", ErrInvalidPointer, off)
	}
	return h.Free(off)
}

// growOwned links a new registry block in front of slot's chain and makes its
// entries the free ones. The caller holds o.mu.
func (h *Heap) growOwned(slot, gen uint32) error {
	b, err := h.Alloc(ownedBlockSize)
	if err != nil {
		return fmt.Errorf("owned objects' registry: %w", err)
	}
	clear(h.Bytes(b, ownedBlockSize))
	field := h.Uint64(h.OwnerRecord(slot, OwnerOwned))
	atomic.StoreUint64(h.Uint64(b), atomic.LoadUint64(field)&ownedOffMask)
	atomic.StoreUint64(field, uint64(gen&0xffff)<<48|b)
	o := &h.allocator().owned
	o.blocks[b] = struct{}{}
	for i := range uint64(ownedPerBlock) {
		o.empty = append(o.empty, b+8+i*8)
	}
	return nil
}

// startOwned begins slot's registry at BindOwner: whatever the owned field
// still names is a former occupant's, which died and whose slot was given
// back before anybody reaped it (freed now).
func (h *Heap) startOwned(slot uint32) error {
	o := &h.allocator().owned
	o.mu.Lock()
	defer o.mu.Unlock()
	o.slot, o.where, o.blocks, o.empty = slot, map[uint64]uint64{}, map[uint64]struct{}{}, nil
	_, err := h.reapOwned(slot)
	return err
}

// endOwned frees this process's owned objects and its registry, at
// UnbindOwner.
func (h *Heap) endOwned(slot uint32) error {
	o := &h.allocator().owned
	o.mu.Lock()
	defer o.mu.Unlock()
	o.where, o.blocks, o.empty = nil, nil, nil
	_, err := h.reapOwned(slot)
	return err
}

// reapOwned claims slot's registry and frees every object it lists, then its
// blocks; it returns how many objects it freed. Entries that name no
// allocated object (a heap whose registry was overwritten) are reported, and
// the walk is bounded by the number of blocks the heap can hold.
func (h *Heap) reapOwned(slot uint32) (int, error) {
	field := h.Uint64(h.OwnerRecord(slot, OwnerOwned))
	v := atomic.LoadUint64(field)
	if v == 0 || !atomic.CompareAndSwapUint64(field, v, 0) {
		return 0, nil
	}
	var errs error
	n := 0
	err := h.ownedBlocks(slot, v, func(b uint64) {
		for i := range uint64(ownedPerBlock) {
			if off := atomic.LoadUint64(h.Uint64(b + 8 + i*8)); off != 0 {
				if err := h.Free(off); err != nil {
					errs = errors.Join(errs, fmt.Errorf("owner slot %d: owned object: %w", slot, err))
					continue
				}
				n++
			}
		}
		if err := h.Free(b); err != nil {
			errs = errors.Join(errs, fmt.Errorf("owner slot %d: owned objects' registry: %w", slot, err))
		}
	})
	return n, errors.Join(errs, err)
}

// ownedBlocks calls visit on each block of the registry chain that owned
// field value v names (slot's), reading a block's next link before the visit
// (which may free it). It walks at most as many blocks as the heap can hold;
// a link that leaves the heap's pages ends the walk with an error.
func (h *Heap) ownedBlocks(slot uint32, v uint64, visit func(block uint64)) error {
	b := v & ownedOffMask
	for blocks := uint64(0); b != 0; blocks++ {
		if blocks > h.hdr.Size/ownedBlockSize || b%8 != 0 || b < h.hdr.PagesOff || b > h.hdr.Size-ownedBlockSize {
			return fieldErr(h.OwnerRecord(slot, OwnerOwned), fmt.Sprintf("owner slot %d owned objects", slot), "registry block %#x is not in the heap", b)
		}
		next := h.load(b)
		visit(b)
		b = next
	}
	return nil
}

// boundSlot is the owner slot and generation this process is bound to.
func (a *allocator) boundSlot() (slot, gen uint32, ok bool) {
	w := a.id.Load().word
	s := w >> lwIdentShift & 0xffff
	if s == identUnattached || s == 0 {
		return 0, 0, false
	}
	return uint32(s - 1), uint32(w >> 32), true
}
