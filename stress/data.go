package stress

import "fmt"

// The invariants of one lock record's data, as a holder checks them (and, at
// the end, the parent).

// sentinel is the list's sentinel in lock record rec: its oNext is the
// record's lNext word and its oPrev the lPrev word.
func sentinel(rec uint64) uint64 { return rec + lNext }

// inspect checks lock i's data. broken: the pair differs, a backward link or
// the length disagrees with the forward chain (what a kill in the middle of an
// update leaves). err: the forward chain itself does not parse, which no kill
// can cause. It returns the objects of the forward chain.
func (t *table) inspect(i int, objs []uint64) (broken bool, _ []uint64, err error) {
	rec := t.lock(i)
	broken = t.load(rec+lA) != t.load(rec+lB)
	s := sentinel(rec)
	limit := int(t.load(t.off+tCap)) + 1
	prev, x := s, t.load(s+oNext)
	for x != s {
		if len(objs) >= limit {
			return broken, objs, fmt.Errorf("lock %d: list longer than %d objects", i, limit)
		}
		if !t.validObj(x, i) {
			return broken, objs, fmt.Errorf("lock %d: list link %#x after %#x is no list object of this lock", i, x, prev)
		}
		if t.load(x+oPrev) != prev {
			broken = true
		}
		objs = append(objs, x)
		prev, x = x, t.load(x+oNext)
	}
	if t.load(s+oPrev) != prev || t.load(rec+lLen) != uint64(len(objs)) {
		broken = true
	}
	return broken, objs, nil
}

// validObj reports whether x can be an object of lock i's list.
func (t *table) validObj(x uint64, i int) bool {
	hdr := t.h.Header()
	return x%8 == 0 && x >= hdr.PagesOff && x+objSize <= hdr.Size && t.load(x+oMagic) == objMagic|uint64(i)
}

// repair makes lock i's data whole: b = a, and the backward links and the
// length rebuilt from the forward chain. A chain that does not parse (a
// violation already counted) is cut: the list becomes empty.
func (t *table) repair(i int, chainOK bool) {
	rec := t.lock(i)
	t.store(rec+lB, t.load(rec+lA))
	s := sentinel(rec)
	if !chainOK {
		t.store(s+oNext, s)
		t.store(s+oPrev, s)
		t.store(rec+lLen, 0)
		return
	}
	n, prev, x := uint64(0), s, t.load(s+oNext)
	for x != s {
		t.store(x+oPrev, prev)
		prev, x = x, t.load(x+oNext)
		n++
	}
	t.store(s+oPrev, prev)
	t.store(rec+lLen, n)
}

// insert links object x, private to the caller, at the tail of lock i's list:
// forward link first, so that the forward chain is a list after every store.
func (t *table) insert(i int, x uint64) {
	rec := t.lock(i)
	s := sentinel(rec)
	last := t.load(s + oPrev)
	t.store(x+oNext, s)
	t.store(x+oPrev, last)
	t.store(x+oMagic, objMagic|uint64(i))
	t.store(last+oNext, x) // x is in the forward chain
	t.store(s+oPrev, x)
	t.store(rec+lLen, t.load(rec+lLen)+1)
}

// removeFirst unlinks the first object of lock i's list (which must not be
// empty), after naming it in the caller's hold word, and returns it.
func (t *table) removeFirst(i int, hold uint64) uint64 {
	rec := t.lock(i)
	s := sentinel(rec)
	x := t.load(s + oNext)
	t.store(hold, x)
	next := t.load(x + oNext)
	t.store(s+oNext, next) // x is out of the forward chain
	t.store(next+oPrev, s)
	t.store(rec+lLen, t.load(rec+lLen)-1)
	return x
}
