package heap

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Inspect and Check read a heap without taking any lock and without writing,
// so they answer on a heap whose processes died anywhere, or whose body holds
// garbage: every walk is bounded by the heap's tables, and what does not parse
// is reported by offset and field.

// Report is what Inspect reads of a heap's allocator.
type Report struct {
	Locks  []LockReport  `json:"locks"`  // the page lock, then the classes'
	Caches []CacheReport `json:"caches"` // cache slots that have an owner
	Owned  []OwnedReport `json:"owned"`  // owner slots with owned objects (AllocOwned)
	Stats  Stats         `json:"stats"`
}

// OwnedReport is one owner slot's registry of owned objects: how many it
// lists, and whether the slot's process is dead (its objects are freed at the
// next Reap).
type OwnedReport struct {
	Slot    uint32 `json:"slot"`
	Dead    bool   `json:"dead"`
	Objects int    `json:"objects"`
}

// LockReport describes one allocator lock.
type LockReport struct {
	Name      string   `json:"name"` // "pages", or "class 64" for the 64-byte class
	Offset    uint64   `json:"offset"`
	Word      uint64   `json:"word"`
	Held      bool     `json:"held"`
	Sleepers  bool     `json:"sleepers,omitempty"`
	Holder    *Holder  `json:"holder,omitempty"`
	Liveness  Liveness `json:"-"`
	State     string   `json:"holder_state,omitempty"` // alive, dead, unknown (unattached)
	Takeovers uint64   `json:"takeovers"`              // from dead holders, ever
	Redo      int      `json:"redo"`                   // committed redo entries pending
}

// CacheReport describes one claimed cache slot.
type CacheReport struct {
	Index   int    `json:"index"`
	Offset  uint64 `json:"offset"`
	Owner   Holder `json:"owner"`
	State   string `json:"owner_state"`
	Objects uint64 `json:"objects"`
}

// FieldError names a heap word that does not parse.
type FieldError struct {
	Offset  uint64
	Field   string
	Problem string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s at %#x: %s", e.Field, e.Offset, e.Problem)
}

func (e *FieldError) Unwrap() error { return ErrCorruptHeap }

func fieldErr(off uint64, field, format string, args ...any) error {
	return &FieldError{Offset: off, Field: field, Problem: fmt.Sprintf(format, args...)}
}

// lockField names the lock record at rec for reports.
func (h *Heap) lockField(rec uint64) string {
	if rec == h.hdr.AllocOff+asPageLock {
		return "pages"
	}
	return fmt.Sprintf("class %d", classSizes[(rec-h.hdr.AllocOff-asClasses)/classStateSz%numClasses])
}

// inspectLock decodes the lock record at rec. The report is filled as far as
// the record parses.
func (h *Heap) inspectLock(rec uint64) (LockReport, [][2]uint64, error) {
	w := atomic.LoadUint64(h.Uint64(rec))
	r := LockReport{Name: h.lockField(rec), Offset: rec, Word: w, Takeovers: h.load(rec + lrTakeovers)}
	field := r.Name + " lock word"
	if !lockWordValid(w) {
		return r, nil, fieldErr(rec, field, "%#x has reserved bits or state %d", w, w&lwStateMask)
	}
	log, err := h.readLog(rec)
	if err != nil {
		return r, nil, fieldErr(rec+lrLogLen, r.Name+" redo log", "%v", errors.Unwrap(err))
	}
	r.Redo = len(log)
	if w == 0 {
		if r.Redo != 0 {
			return r, nil, fieldErr(rec+lrLogLen, r.Name+" redo log", "%d entries under a free lock", r.Redo)
		}
		return r, nil, nil
	}
	r.Held, r.Sleepers = true, w&lwStateMask == lwSleepers
	o, err := h.decodeIdent(w)
	if err != nil {
		return r, nil, fieldErr(rec, field, "%#x: %v", w, err)
	}
	r.Holder, r.Liveness = &o, h.liveness(o)
	r.State = r.Liveness.String()
	return r, log, nil
}

// Inspect reports the allocator's locks, its claimed cache slots and its
// statistics, and checks the owner slots' liveness words. It takes no lock and never waits; what does not parse comes back
// as errors (FieldError) joined, next to everything that did.
func (h *Heap) Inspect() (Report, error) {
	var rep Report
	var errs []error
	for rec := range h.lockRecords() {
		l, _, err := h.inspectLock(rec)
		rep.Locks = append(rep.Locks, l)
		errs = append(errs, err)
	}
	for i := range int(h.hdr.Params.Caches) {
		off := h.hdr.CacheOff + uint64(i)*cacheSlotSize
		o := h.load(off + csOwner)
		if o == 0 {
			continue
		}
		c := CacheReport{Index: i, Offset: off}
		who, err := h.decodeIdent(o)
		if o&0xffff != 0 || err != nil {
			errs = append(errs, fieldErr(off+csOwner, fmt.Sprintf("cache slot %d owner", i), "%#x names no process", o))
			continue
		}
		c.Owner, c.State = who, h.liveness(who).String()
		for cl := range numClasses {
			cc := off + cacheSlotHead + uint64(cl)*cacheClassSize
			n := atomic.LoadUint32(h.Uint32(cc + ccCount))
			if n > cacheDepth {
				errs = append(errs, fieldErr(cc+ccCount, fmt.Sprintf("cache slot %d class %d count", i, classSizes[cl]), "%d, at most %d", n, cacheDepth))
				continue
			}
			c.Objects += uint64(n)
		}
		rep.Caches = append(rep.Caches, c)
	}
	for slot := range h.hdr.Params.MaxProcs {
		errs = append(errs, h.checkOwner(slot, false))
		o, err := h.inspectOwned(slot)
		errs = append(errs, err)
		if o.Objects > 0 {
			rep.Owned = append(rep.Owned, o)
		}
	}
	rep.Stats = h.Stats()
	errs = append(errs, h.classFields())
	return rep, errors.Join(errs...)
}

// inspectOwned counts the objects slot's registry lists, walking at most as
// many blocks as the heap can hold.
func (h *Heap) inspectOwned(slot uint32) (OwnedReport, error) {
	live, _ := h.OwnerLiveness(slot)
	r := OwnedReport{Slot: slot, Dead: live == 0 || OwnerDead(live)}
	err := h.ownedBlocks(slot, h.load(h.OwnerRecord(slot, OwnerOwned)), func(b uint64) {
		for i := range uint64(ownedPerBlock) {
			if h.load(b+8+i*8) != 0 {
				r.Objects++
			}
		}
	})
	return r, err
}

// checkState is the check of attaching: each word that must parse on its own,
// whatever other processes are doing — the allocator's lock words, redo log
// lengths, cache slot owners and counts, free list heads and carving bounds,
// and the owner slots' liveness words — read once.
// It names the first that does not.
func (h *Heap) checkState() error {
	for rec := range h.lockRecords() {
		name := h.lockField(rec)
		if w := h.load(rec); !lockWordValid(w) {
			return fieldErr(rec, name+" lock word", "%#x has reserved bits or state %d", w, w&lwStateMask)
		} else if _, err := h.decodeIdent(w); w != 0 && err != nil {
			return fieldErr(rec, name+" lock word", "%#x: %v", w, err)
		}
		if n := h.load(rec + lrLogLen); n > redoMax {
			return fieldErr(rec+lrLogLen, name+" redo log length", "%d, at most %d", n, redoMax)
		}
	}
	if err := h.classFields(); err != nil {
		return err
	}
	for s := range h.hdr.Params.MaxProcs {
		if err := h.checkOwner(s, false); err != nil {
			return err
		}
	}
	for i := range uint64(h.hdr.Params.Caches) {
		slot := h.hdr.CacheOff + i*cacheSlotSize
		if o := h.load(slot + csOwner); o != 0 {
			if _, err := h.decodeIdent(o); o&0xffff != 0 || err != nil {
				return fieldErr(slot+csOwner, fmt.Sprintf("cache slot %d owner", i), "%#x names no process", o)
			}
		}
		for c := range numClasses {
			cc := slot + cacheSlotHead + uint64(c)*cacheClassSize
			if n := atomic.LoadUint32(h.Uint32(cc + ccCount)); n > cacheDepth {
				return fieldErr(cc+ccCount, fmt.Sprintf("cache slot %d class %d count", i, classSizes[c]), "%d, at most %d", n, cacheDepth)
			}
		}
	}
	return nil
}

// classFields checks the words of the class pools that hold offsets: each is 0
// or in the pages.
func (h *Heap) classFields() error {
	for c := range numClasses {
		for _, f := range []struct {
			off  uint64
			name string
		}{{csFreeHead, "free list head"}, {csCarveNext, "carving position"}, {csCarveEnd, "carving end"}, {csSpare, "spare slab"}} {
			v := h.load(h.classState(c, f.off))
			if v != 0 && (v < h.hdr.PagesOff || v > h.hdr.Size || v%8 != 0) {
				return fieldErr(h.classState(c, f.off), fmt.Sprintf("class %d %s", classSizes[c], f.name), "%#x is outside the pages [%#x, %#x)", v, h.hdr.PagesOff, h.hdr.Size)
			}
		}
	}
	return nil
}
