package verifier

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) {
	strictBounds = true // a contradiction in the intervals fails the test that finds it
	testutil.Main(m)
}

// smallTnums is every tnum over the low width bits: each bit 0, 1 or unknown.
func smallTnums(width int) []Tnum {
	var out []Tnum
	var gen func(i int, t Tnum)
	gen = func(i int, t Tnum) {
		if i == width {
			out = append(out, t)
			return
		}
		gen(i+1, t)
		gen(i+1, Tnum{Value: t.Value | 1<<i, Mask: t.Mask})
		gen(i+1, Tnum{Value: t.Value, Mask: t.Mask | 1<<i})
	}
	gen(0, Tnum{})
	return out
}

// members lists the concrete values of a small tnum.
func members(t Tnum) []uint64 {
	var out []uint64
	for sub := t.Mask; ; sub = (sub - 1) & t.Mask {
		out = append(out, t.Value|sub)
		if sub == 0 {
			break
		}
	}
	return out
}

// TestTnumSound checks, for every pair of 4-bit tnums and every pair of their
// members, that each operation's result contains the concrete result.
func TestTnumSound(t *testing.T) {
	ts := smallTnums(4)
	require.Len(t, ts, 81)
	binary := map[string]struct {
		abs  func(a, b Tnum) Tnum
		conc func(a, b uint64) uint64
	}{
		"add": {Tnum.Add, func(a, b uint64) uint64 { return a + b }},
		"sub": {Tnum.Sub, func(a, b uint64) uint64 { return a - b }},
		"mul": {Tnum.Mul, func(a, b uint64) uint64 { return a * b }},
		"and": {Tnum.And, func(a, b uint64) uint64 { return a & b }},
		"or":  {Tnum.Or, func(a, b uint64) uint64 { return a | b }},
		"xor": {Tnum.Xor, func(a, b uint64) uint64 { return a ^ b }},
	}
	for name, op := range binary {
		for _, a := range ts {
			for _, b := range ts {
				r := op.abs(a, b)
				require.Zero(t, r.Value&r.Mask, "%s(%+v, %+v) = %+v: a bit both known and unknown", name, a, b, r)
				for _, x := range members(a) {
					for _, y := range members(b) {
						if z := op.conc(x, y); !r.Contains(z) {
							t.Fatalf("%s(%+v, %+v) = %+v misses %d %s %d = %#x", name, a, b, r, x, name, y, z)
						}
					}
				}
			}
		}
	}
	for _, a := range ts {
		sa := Tnum{Value: a.Value << 60, Mask: a.Mask << 60} // the sign bit matters for arsh
		for n := uint(0); n < 66; n++ {
			for _, x := range members(a) {
				require.True(t, a.Lsh(n).Contains(x<<(n&63)))
				require.True(t, a.Rsh(n).Contains(x>>(n&63)))
			}
			for _, x := range members(sa) {
				require.True(t, sa.Arsh(n).Contains(uint64(int64(x)>>(n&63))), "arsh %+v by %d, member %#x", sa, n, x)
			}
		}
		for _, b := range ts {
			u := a.Union(b)
			for _, x := range append(members(a), members(b)...) {
				require.True(t, u.Contains(x), "union(%+v, %+v) = %+v misses %d", a, b, u, x)
			}
			assert.True(t, u.Includes(a) && u.Includes(b))
			in := a.Intersect(b)
			for _, x := range members(a) {
				if b.Contains(x) {
					require.True(t, in.Contains(x), "intersect(%+v, %+v) misses %d", a, b, x)
				}
			}
		}
		for size := 1; size <= 8; size *= 2 {
			wide := Tnum{Value: a.Value * 0x1111111111111111, Mask: a.Mask * 0x1111111111111111}
			for _, x := range members(a) {
				v := x * 0x1111111111111111
				if size < 8 {
					v &= 1<<(8*size) - 1
				}
				require.True(t, wide.Truncate(size).Contains(v))
			}
		}
	}
}

func TestTnumRange(t *testing.T) {
	for lo := uint64(0); lo < 40; lo++ {
		for hi := lo; hi < 40; hi++ {
			r := Range(lo, hi)
			for v := lo; v <= hi; v++ {
				require.True(t, r.Contains(v), "Range(%d, %d) = %+v misses %d", lo, hi, r, v)
			}
		}
	}
	assert.Equal(t, Tnum{Value: 0, Mask: 3}, Range(0, 2), "coarse: also admits 3")
	assert.Equal(t, Unknown, Range(0, ^uint64(0)))
	assert.True(t, Const(5).IsConst())
	assert.Equal(t, uint64(8), Range(8, 11).Min())
	assert.Equal(t, uint64(11), Range(8, 11).Max())
	// Precision: a known value stays known.
	assert.Equal(t, Const(12), Const(5).Add(Const(7)))
	assert.Equal(t, Const(35), Const(5).Mul(Const(7)))
	assert.Equal(t, Tnum{Value: 0x10, Mask: 0x0f}, Tnum{Value: 0x10, Mask: 0xef}.And(Const(0x1f)))
}
