package verifier

import (
	"fmt"
	"math"
	"math/bits"
	"strings"
)

// Bounds. A tnum knows a scalar's bits; it cannot say "between 1 and 3" or
// keep "below 4096" through a subtraction. As the kernel's umin/umax,
// smin/smax, u32_min/u32_max and s32_min/s32_max do, a scalar also carries four
// intervals: its value read as an unsigned and as a signed number, on 64 bits
// and on its low 32. Each operation computes the intervals it can (alubounds.go),
// each comparison narrows the ones it speaks of (refine.go), and sync makes the
// five descriptions agree, each narrowing the others, so that what one
// comparison learns every later use sees.

// domain is one reading of a scalar.
type domain uint8

const (
	u64 domain = iota
	s64
	u32
	s32
)

var domainNames = [...]string{"umin", "smin", "umin32", "smin32"}

// Intervals are kept as keys: the reading mapped to an unsigned number in the
// same order (a signed reading with its sign bit flipped), so that one piece
// of code narrows, joins and widens all four. A key's raw value is the value's
// bits in the domain's width, and key and raw value map to each other by the
// same flip.
type interval struct{ lo, hi uint64 }

// Bounds are a scalar's four intervals (get and set by domain); the 32-bit
// ones are stored in 32 bits.
type Bounds struct {
	wide   [2]interval // u64, s64
	narrow [2]struct{ lo, hi uint32 }
}

var domains = [...]domain{u64, s64, u32, s32}

func (b Bounds) get(d domain) interval {
	if d.wide() {
		return b.wide[d]
	}
	iv := b.narrow[d-u32]
	return interval{uint64(iv.lo), uint64(iv.hi)}
}

func (b *Bounds) set(d domain, iv interval) {
	if d.wide() {
		b.wide[d] = iv
		return
	}
	b.narrow[d-u32].lo, b.narrow[d-u32].hi = uint32(iv.lo), uint32(iv.hi)
}

func (d domain) wide() bool   { return d <= s64 }
func (d domain) signed() bool { return d == s64 || d == s32 }

// top is the largest key (and raw value) of the domain's width.
func (d domain) top() uint64 {
	if d.wide() {
		return math.MaxUint64
	}
	return math.MaxUint32
}

// flip maps raw values to keys and back.
func (d domain) flip() uint64 {
	switch d {
	case s64:
		return 1 << 63
	case s32:
		return 1 << 31
	}
	return 0
}

func (d domain) key(raw uint64) uint64 { return raw ^ d.flip() }

// int is the key's value as a number (sign-extended for the signed readings).
func (d domain) int(key uint64) int64 {
	raw := key ^ d.flip()
	if d == s32 {
		return int64(int32(uint32(raw)))
	}
	return int64(raw)
}

// keyOf is the key of value v (in the domain's range).
func (d domain) keyOf(v int64) uint64 { return d.key(uint64(v) & d.top()) }

func fullBounds() Bounds {
	var b Bounds
	for _, d := range domains {
		b.set(d, interval{0, d.top()})
	}
	return b
}

// narrowKeys intersects domain d with keys [lo, hi]; false if nothing is left.
func (b *Bounds) narrowKeys(d domain, lo, hi uint64) bool {
	iv := b.get(d)
	iv.lo, iv.hi = max(iv.lo, lo), min(iv.hi, hi)
	b.set(d, iv)
	return iv.lo <= iv.hi
}

// narrowRaw intersects d with the values from raw lo to raw hi, which lie in
// order in d.
func (b *Bounds) narrowRaw(d domain, lo, hi uint64) bool {
	return b.narrowKeys(d, d.key(lo), d.key(hi))
}

// raw is d's interval as raw values, and whether it keeps to one half of the
// width (one sign): there the unsigned and signed orders agree on it.
func (b *Bounds) raw(d domain) (lo, hi uint64, oneSign bool) {
	iv := b.get(d)
	lo, hi = d.key(iv.lo), d.key(iv.hi)
	sign := d.top()>>1 + 1
	return lo, hi, (lo^hi)&sign == 0
}

// tnumKeys are the lowest and highest keys of tnum t's values in domain d:
// in a signed reading, an unknown sign bit makes the lowest value negative
// and the highest positive.
func tnumKeys(d domain, t Tnum) (lo, hi uint64) {
	top := d.top()
	v, m := t.Value&top, t.Mask&top
	sign := d.flip()
	return d.key(v | m&sign), d.key(v | m&^sign)
}

// setTnum sets every interval to what tnum t says alone.
func (b *Bounds) setTnum(t Tnum) {
	for _, d := range domains {
		lo, hi := tnumKeys(d, t)
		b.set(d, interval{lo, hi})
	}
}

// sync narrows r's tnum and intervals by each other until they agree (a few
// rounds: each round only narrows). ok is false when no value is left: the
// path that made r cannot happen.
func (r Reg) sync() (Reg, bool) {
	for range 4 {
		prev := r
		t, b := r.Val, &r.B
		// The tnum bounds every reading.
		ok := true
		for _, d := range domains {
			lo, hi := tnumKeys(d, t)
			ok = ok && b.narrowKeys(d, lo, hi)
		}
		// An interval that keeps to one sign is an interval in the other
		// order of its width too.
		for _, p := range [...][2]domain{{u64, s64}, {s64, u64}, {u32, s32}, {s32, u32}} {
			if lo, hi, one := b.raw(p[0]); ok && one {
				ok = b.narrowRaw(p[1], lo, hi)
			}
		}
		// Where every value has the same upper half, the 64-bit interval is
		// the upper half and an interval of low halves, and the other way
		// round.
		for _, d := range [...]domain{u64, s64} {
			lo, hi, _ := b.raw(d)
			if !ok || lo>>32 != hi>>32 {
				continue
			}
			ok = b.narrowRaw(u32, lo&math.MaxUint32, hi&math.MaxUint32)
			l32, h32, _ := b.raw(u32)
			ok = ok && b.narrowRaw(d, lo&^math.MaxUint32|l32, hi&^math.MaxUint32|h32)
		}
		if !ok {
			return r, false
		}
		// The intervals bound the tnum: the 64-bit unsigned one all of it,
		// the 32-bit one its low half.
		i32, i64 := b.get(u32), b.get(u64)
		for _, u := range [...]Tnum{Range(i64.lo, i64.hi), Range(i32.lo, i32.hi).lowHalf()} {
			if !t.overlaps(u) {
				return r, false
			}
			t = t.Intersect(u)
		}
		r.Val = t
		if r == prev {
			break
		}
	}
	return r, true
}

// overlaps reports whether some value is in both t and u.
func (t Tnum) overlaps(u Tnum) bool {
	return (t.Value^u.Value)&^(t.Mask|u.Mask) == 0
}

// Bounds returns the unsigned range r's value lies in.
func (r Reg) Bounds() (lo, hi uint64) { return r.B.wide[u64].lo, r.B.wide[u64].hi }

// joinBounds is where scalars a (the state so far) and b (arriving) meet: the
// tnums' union and each interval's hull, where an end that moves is widened
// to a landmark (the low end down to 0 or a power of two, the high end up to
// one less than a power of two, all as keys), so that a counter round a loop
// reaches its fixpoint in a few dozen passes at most, not one pass per step.
// The comparison that bounds the loop trims the widened end back.
func joinBounds(a, b Reg) Reg {
	j := Reg{Kind: Scalar, Val: a.Val.Union(b.Val)}
	for _, d := range domains {
		ai, bi := a.B.get(d), b.B.get(d)
		iv := ai
		if bi.lo < ai.lo {
			iv.lo = 0
			if bi.lo > 0 {
				iv.lo = 1 << (bits.Len64(bi.lo) - 1)
			}
		}
		if bi.hi > ai.hi {
			iv.hi = math.MaxUint64 >> bits.LeadingZeros64(bi.hi)
		}
		j.B.set(d, iv)
	}
	if s, ok := j.sync(); ok {
		return s
	}
	return fallback(j.Val, "join")
}

// strictBounds makes an internal contradiction panic: a sound operation on
// values that exist leaving none, which falling back to the tnum alone (safe,
// and what a user gets) would hide. The package's tests set it.
var strictBounds bool

// fallback is a scalar known by tnum t alone, where narrowing it by intervals
// found no value left.
func fallback(t Tnum, where string) Reg {
	if strictBounds {
		panic("verifier: contradictory bounds in " + where)
	}
	return scalar(t)
}

// boundsString writes the intervals that say more than r's tnum alone, as
// the kernel's log does (",umin=0x1,umax=0x7,smin=...").
func (r Reg) boundsString() string {
	plain := scalar(r.Val)
	var sb strings.Builder
	for _, dom := range domains {
		iv := r.B.get(dom)
		if iv == plain.B.get(dom) {
			continue
		}
		lo, hi := fmt.Sprintf("%#x", iv.lo), fmt.Sprintf("%#x", iv.hi)
		if dom.signed() {
			lo, hi = fmt.Sprint(dom.int(iv.lo)), fmt.Sprint(dom.int(iv.hi))
		}
		name := domainNames[dom]
		fmt.Fprintf(&sb, ",%s=%s,%s=%s", name, lo, strings.Replace(name, "min", "max", 1), hi)
	}
	return sb.String()
}
