package verifier

import "math/bits"

// A Tnum (tristate number) abstracts a set of 64-bit values bit by bit: each bit
// is known 0, known 1, or unknown. Value holds the known 1 bits, Mask the
// unknown ones; a bit set in both never occurs. The set it stands for is every
// value that agrees with Value outside Mask. Operations propagate unknown bits
// so that the result covers every outcome of the operation on members of the
// operands (soundness); they try to keep as few bits unknown as they can
// (precision). TestTnumSound checks soundness exhaustively on small operands.
type Tnum struct {
	Value, Mask uint64
}

// Unknown is the tnum of all values.
var Unknown = Tnum{Mask: ^uint64(0)}

// Const is the tnum of exactly v.
func Const(v uint64) Tnum { return Tnum{Value: v} }

// Range is the smallest tnum containing [lo, hi] (lo <= hi). It can be coarse:
// Range(0, 2) also admits 3.
func Range(lo, hi uint64) Tnum {
	chi := lo ^ hi
	n := bits.Len64(chi)
	if n > 63 {
		return Unknown
	}
	delta := uint64(1)<<n - 1
	return Tnum{Value: lo &^ delta, Mask: delta}
}

// IsConst reports whether t stands for one value.
func (t Tnum) IsConst() bool { return t.Mask == 0 }

// Contains reports whether concrete value v is in t.
func (t Tnum) Contains(v uint64) bool { return v&^t.Mask == t.Value }

// Includes reports whether every value of u is in t.
func (t Tnum) Includes(u Tnum) bool {
	if u.Mask&^t.Mask != 0 {
		return false
	}
	return u.Value&^t.Mask == t.Value
}

// Min and Max bound t's values as unsigned numbers.
func (t Tnum) Min() uint64 { return t.Value }
func (t Tnum) Max() uint64 { return t.Value | t.Mask }

// Add is the tnum of a+b: carries out of unknown bits make the bits they reach
// unknown.
func (a Tnum) Add(b Tnum) Tnum {
	sv := a.Value + b.Value
	sm := a.Mask + b.Mask
	chi := (sv + sm) ^ sv
	mu := chi | a.Mask | b.Mask
	return Tnum{Value: sv &^ mu, Mask: mu}
}

// Sub is the tnum of a-b.
func (a Tnum) Sub(b Tnum) Tnum {
	dv := a.Value - b.Value
	chi := (dv + a.Mask) ^ (dv - b.Mask)
	mu := chi | a.Mask | b.Mask
	return Tnum{Value: dv &^ mu, Mask: mu}
}

// And is the tnum of a&b: a bit is known 1 if known 1 in both, known 0 if
// known 0 in either.
func (a Tnum) And(b Tnum) Tnum {
	v := a.Value & b.Value
	return Tnum{Value: v, Mask: (a.Value | a.Mask) & (b.Value | b.Mask) &^ v}
}

// Or is the tnum of a|b.
func (a Tnum) Or(b Tnum) Tnum {
	v := a.Value | b.Value
	return Tnum{Value: v, Mask: (a.Mask | b.Mask) &^ v}
}

// Xor is the tnum of a^b.
func (a Tnum) Xor(b Tnum) Tnum {
	mu := a.Mask | b.Mask
	return Tnum{Value: (a.Value ^ b.Value) &^ mu, Mask: mu}
}

// Lsh, Rsh and Arsh shift by a known count (taken modulo 64, as eBPF does).
func (a Tnum) Lsh(n uint) Tnum { return Tnum{Value: a.Value << (n & 63), Mask: a.Mask << (n & 63)} }
func (a Tnum) Rsh(n uint) Tnum { return Tnum{Value: a.Value >> (n & 63), Mask: a.Mask >> (n & 63)} }

// Arsh shifts right arithmetically: an unknown sign bit leaves every bit it
// fills unknown.
func (a Tnum) Arsh(n uint) Tnum {
	n &= 63
	return Tnum{Value: uint64(int64(a.Value) >> n), Mask: uint64(int64(a.Mask) >> n)}
}

// Mul is the tnum of a*b, as a sum of partial products: for each bit of a that
// is known 1, b's unknown bits; for each unknown bit of a, all of b's possible
// bits; added to the product of the known values.
func (a Tnum) Mul(b Tnum) Tnum {
	accV := a.Value * b.Value
	acc := Tnum{}
	for a.Value != 0 || a.Mask != 0 {
		switch {
		case a.Value&1 != 0:
			acc = acc.Add(Tnum{Mask: b.Mask})
		case a.Mask&1 != 0:
			acc = acc.Add(Tnum{Mask: b.Value | b.Mask})
		}
		a, b = a.Rsh(1), b.Lsh(1)
	}
	return Const(accV).Add(acc)
}

// Truncate keeps the low size bytes (1, 2, 4 or 8): a zero-extending load or a
// 32-bit operation's result.
func (a Tnum) Truncate(size int) Tnum {
	if size >= 8 {
		return a
	}
	m := uint64(1)<<(8*size) - 1
	return Tnum{Value: a.Value & m, Mask: a.Mask & m}
}

// lowHalf is the tnum of every value whose low 32 bits a admits: a's low
// half, its upper half unknown (what a 32-bit comparison learns of a).
func (a Tnum) lowHalf() Tnum {
	return Tnum{Value: a.Value & 0xffffffff, Mask: a.Mask | ^uint64(0xffffffff)}
}

// Intersect is the tnum of values in both a and b (when they overlap).
func (a Tnum) Intersect(b Tnum) Tnum {
	v := a.Value | b.Value
	mu := a.Mask & b.Mask
	return Tnum{Value: v &^ mu, Mask: mu}
}

// Union is the smallest tnum containing both a and b: where paths join.
func (a Tnum) Union(b Tnum) Tnum {
	mu := a.Value ^ b.Value | a.Mask | b.Mask
	return Tnum{Value: a.Value & b.Value &^ mu, Mask: mu}
}
