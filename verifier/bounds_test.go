package verifier

import (
	"math"
	"math/bits"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
)

// member reports whether the raw value v is one of r's: in its tnum and in
// each of its four intervals.
func member(r Reg, v uint64) bool {
	for _, d := range domains {
		if k, iv := d.key(v&d.top()), r.B.get(d); k < iv.lo || k > iv.hi {
			return false
		}
	}
	return r.Val.Contains(v)
}

// span is an operand for the soundness tests: an unknown number narrowed to
// [lo, hi] in one reading.
type span struct {
	d      domain
	lo, hi int64 // as numbers of the reading (the unsigned 64-bit one as its bits)
}

func (sp span) reg(t *testing.T) Reg {
	r := unknownScalar()
	if !r.B.narrowKeys(sp.d, sp.d.keyOf(sp.lo), sp.d.keyOf(sp.hi)) {
		t.Fatalf("span %v is empty", sp)
	}
	r, ok := r.sync()
	if !ok {
		t.Fatalf("span %v syncs to nothing", sp)
	}
	return r
}

// samples are raw values of r near the ends of the span and across it, with
// several upper halves where the span is a 32-bit reading.
func (sp span) samples(r Reg) []uint64 {
	var raws []uint64
	for _, end := range []int64{sp.lo, sp.hi} {
		for delta := int64(-2); delta <= 2; delta++ {
			raws = append(raws, uint64(end+delta))
		}
	}
	step := (uint64(sp.hi) - uint64(sp.lo)) / 7
	for i := uint64(1); i < 7; i++ {
		raws = append(raws, uint64(sp.lo)+i*step)
	}
	var out []uint64
	for _, raw := range raws {
		uppers := []uint64{raw &^ math.MaxUint32}
		if !sp.d.wide() {
			uppers = []uint64{0, 1 << 32, 0xffffffff << 32, 1 << 63}
		}
		for _, up := range uppers {
			if v := up | raw&math.MaxUint32; member(r, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// spans mix readings, signs and both sides of the points where readings part.
var spans = []span{
	{u64, 0, 0}, {u64, 0, 3}, {u64, 1, 3}, {u64, 5, 100}, {u64, 0, 1023}, {u64, 3, 3}, {u64, 33, 33},
	{u64, 1 << 62, 1<<62 + 9}, {u64, -4, -1}, {u64, 1<<32 - 2, 1<<32 + 2}, {u64, 100, 200}, {u64, 0x7ff0, 0x8010},
	{s64, -5, 3}, {s64, -100, -90}, {s64, math.MinInt64, math.MinInt64 + 4}, {s64, -1, -1},
	{u32, 1<<31 - 2, 1<<31 + 2}, {u32, 0, 7}, {s32, -3, 4},
}

// rfcALU is RFC 9669's result of ALU (or byte swap) instruction in on a and b,
// 64-bit if w; a 32-bit operation works on the low halves and zero-extends.
func rfcALU(in bytecode.Slot, w bool, a, b uint64) uint64 {
	if in.Op&0xf0 == 0xd0 { // byte swaps: the immediate is the width
		n := in.Imm
		if in.Op == 0xd4 { // to little-endian: a truncation here
			return a & (math.MaxUint64 >> (64 - n))
		}
		return bits.ReverseBytes64(a) >> (64 - n)
	}
	bitsW := uint64(64)
	if !w {
		bitsW, a, b = 32, a&math.MaxUint32, b&math.MaxUint32
	}
	sx := func(v uint64, n uint64) int64 { return int64(v<<(64-n)) >> (64 - n) }
	sa, sb := sx(a, bitsW), sx(b, bitsW)
	var v uint64
	switch in.Op & 0xf0 {
	case 0x00:
		v = a + b
	case 0x10:
		v = a - b
	case 0x20:
		v = a * b
	case 0x30:
		switch {
		case b == 0:
		case in.Off == 1:
			v = uint64(sa / sb)
		default:
			v = a / b
		}
	case 0x90:
		switch {
		case b == 0:
			v = a
		case in.Off == 1:
			v = uint64(sa % sb)
		default:
			v = a % b
		}
	case 0x40:
		v = a | b
	case 0x50:
		v = a & b
	case 0xa0:
		v = a ^ b
	case 0x60:
		v = a << (b & (bitsW - 1))
	case 0x70:
		v = a >> (b & (bitsW - 1))
	case 0xc0:
		v = uint64(sa >> (b & (bitsW - 1)))
	case 0x80:
		v = -a
	case 0xb0:
		v = b
		if in.Off != 0 {
			v = uint64(sx(b, uint64(in.Off)))
		}
	}
	if !w {
		v &= math.MaxUint32
	}
	return v
}

// aluCases are every scalar ALU operation kflex tracks: each arithmetic and
// logic operation on 64 and 32 bits, signed division, sign extension and the
// byte swaps.
func aluCases() []struct {
	in bytecode.Slot
	w  bool
} {
	var out []struct {
		in bytecode.Slot
		w  bool
	}
	add := func(op uint8, off int16, imm int32) {
		out = append(out, struct {
			in bytecode.Slot
			w  bool
		}{bytecode.Slot{Op: op, Off: off, Imm: imm}, op&7 == 0x07})
	}
	for _, cls := range []uint8{0x07, 0x04} {
		for _, op := range []uint8{0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0} {
			add(cls|op|0x08, 0, 0)
		}
		add(cls|0x38, 1, 0)
		add(cls|0x98, 1, 0)
		add(cls|0xb8, 8, 0)
		add(cls|0xb8, 16, 0)
	}
	add(0xbf, 32, 0)
	for _, n := range []int32{16, 32, 64} {
		add(0xd4, 0, n)
		add(0xdc, 0, n)
		add(0xd7, 0, n)
	}
	return out
}

// TestALUBoundsSound: for every ALU operation and every pair of operand
// spans, every result of members of the operands is a member of the result
// the analysis computes (scalarResult: its tnum and four intervals).
func TestALUBoundsSound(t *testing.T) {
	narrowed, checked := 0, 0
	for _, c := range aluCases() {
		for _, dsp := range spans {
			for _, ssp := range spans {
				d, s := dsp.reg(t), ssp.reg(t)
				r := scalarResult(c.in, c.w, d, s)
				if r != scalar(r.Val) {
					narrowed++
				}
				for _, a := range dsp.samples(d) {
					for _, b := range ssp.samples(s) {
						checked++
						if v := rfcALU(c.in, c.w, a, b); !member(r, v) {
							t.Fatalf("%#x off %d imm %d: %#x, %#x = %#x, not in %v (operands %v, %v)",
								c.in.Op, c.in.Off, c.in.Imm, a, b, v, r, d, s)
						}
					}
				}
			}
		}
	}
	if narrowed == 0 {
		t.Error("no operation kept intervals beyond its tnum")
	}
	t.Logf("%d results checked; %d operations kept intervals beyond the tnum", checked, narrowed)
}

// comparison is what jump op decides for a and b, on 64 bits or (wide
// false) the low halves.
func comparison(op uint8, wide bool, a, b uint64) bool {
	sa, sb := int64(a), int64(b)
	if !wide {
		a, b, sa, sb = a&math.MaxUint32, b&math.MaxUint32, int64(int32(a)), int64(int32(b))
	}
	switch op {
	case 0x10:
		return a == b
	case 0x50:
		return a != b
	case 0x20:
		return a > b
	case 0x30:
		return a >= b
	case 0xa0:
		return a < b
	case 0xb0:
		return a <= b
	case 0x40:
		return a&b != 0
	case 0x60:
		return sa > sb
	case 0x70:
		return sa >= sb
	case 0xc0:
		return sa < sb
	}
	return sa <= sb // 0xd0
}

// TestRefineSound: on both sides of every comparison, 64- and 32-bit, of
// every pair of operand spans, each pair of members goes to the side the
// comparison sends it to, is a member of both narrowed operands there, and
// that side is not called impossible.
func TestRefineSound(t *testing.T) {
	narrowed, checked := 0, 0
	for _, wide := range []bool{true, false} {
		for _, op := range []uint8{0x10, 0x50, 0x20, 0x30, 0xa0, 0xb0, 0x40, 0x60, 0x70, 0xc0, 0xd0} {
			for _, xsp := range spans {
				for _, ysp := range spans {
					x, y := xsp.reg(t), ysp.reg(t)
					taken, fall, takenOK, fallOK := branch(op, wide, x, y)
					if taken[0] != x || fall[0] != x || taken[1] != y || fall[1] != y {
						narrowed++
					}
					for _, a := range xsp.samples(x) {
						for _, b := range ysp.samples(y) {
							checked++
							side, ok, name := fall, fallOK, "falls through"
							if comparison(op, wide, a, b) {
								side, ok, name = taken, takenOK, "is taken"
							}
							if !ok || !member(side[0], a) || !member(side[1], b) {
								t.Fatalf("op %#x (64-bit %v) %#x, %#x %s: %v, %v (possible: %v); operands %v, %v",
									op, wide, a, b, name, side[0], side[1], ok, x, y)
							}
						}
					}
				}
			}
		}
	}
	if narrowed == 0 {
		t.Error("no comparison narrowed anything")
	}
	t.Logf("%d pairs checked; %d comparisons narrowed an operand", checked, narrowed)
}

// TestJoinSound: where two values meet, the join has every member of both.
func TestJoinSound(t *testing.T) {
	for _, asp := range spans {
		for _, bsp := range spans {
			a, b := asp.reg(t), bsp.reg(t)
			j := joinBounds(a, b)
			for _, v := range append(asp.samples(a), bsp.samples(b)...) {
				if !member(j, v) {
					t.Fatalf("%#x is in %v or %v, not in their join %v", v, a, b, j)
				}
			}
		}
	}
}

// TestComparisonsBoundIndex: an index bounded by comparisons indexes a
// checked pointer with no guard: tested non-negative and below a bound with
// signed comparisons in either order, with negative constants too, on 32
// bits where the upper half is known 0 (clang's alu32 loop counters), or
// against a register holding the bound. One test alone, or 32-bit tests of a
// value whose upper half is unknown, leave it guarded.
func TestComparisonsBoundIndex(t *testing.T) {
	cfg := testConfig
	cfg.EntryArg = true
	for _, tc := range []struct {
		tests string
		want  Access
	}{
		{"ldxdw %r5, [%r1+8]\njslt %r5, 0, +4\njsgt %r5, 1000, +3", HeapChecked},
		{"ldxdw %r5, [%r1+8]\njsge %r5, 0, +1\nja +4\njsge %r5, 1001, +3", HeapChecked},
		{"ldxdw %r5, [%r1+8]\njsge %r5, 1001, +4\njslt %r5, 0, +3", HeapChecked},
		{"ldxw %r5, [%r1+8]\njslt32 %r5, 0, +4\njsgt32 %r5, 1000, +3", HeapChecked},
		{"ldxdw %r5, [%r1+8]\njslt32 %r5, 0, +4\njsgt32 %r5, 1000, +3", HeapAccess},
		{"ldxdw %r5, [%r1+8]\nmov %r6, 1000\njgt %r5, %r6, +3", HeapChecked},
		{"ldxdw %r5, [%r1+8]\njsgt %r5, 1000, +4\nmov %r0, 0", HeapAccess},
		{"ldxdw %r5, [%r1+8]\nmov32 %r5, %r5\njge32 %r5, 16, out", HeapChecked},
		{"ldxdw %r5, [%r1+8]\nmov %r5, %r5\njge32 %r5, 16, out", HeapAccess},
		{"ldxdw %r5, [%r1+8]\njsle %r5, -1, out\njsge %r5, 16, out", HeapChecked},
	} {
		src := tc.tests + "\nlsh %r5, 3\nadd %r5, %r3\nldxdw %r0, [%r5+0]\nout:\nmov %r0, 0\nexit"
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err, src)
		r, err := Verify(insns, cfg)
		require.NoError(t, err, src)
		assert.Equal(t, []Access{tc.want}, heapAccesses(r), src)
	}
}

// TestScalarSynced: a number made from a tnum alone (scalar) has intervals
// that sync would not narrow, so that equal values compare equal however
// they were made.
func TestScalarSynced(t *testing.T) {
	tnums := smallTnums(6)
	for _, sp := range spans {
		tnums = append(tnums, sp.reg(t).Val)
	}
	for _, shift := range []uint{0, 26, 29, 58} {
		for _, tn := range smallTnums(6) {
			tnums = append(tnums, tn.Lsh(shift), tn.Lsh(shift).Arsh(shift/2), Tnum{Value: tn.Value << shift, Mask: ^(tn.Value << shift)})
		}
	}
	for _, tn := range tnums {
		r := scalar(tn)
		s, ok := r.sync()
		if !ok || s != r {
			t.Fatalf("scalar(%#x/%#x) = %v, synced %v (ok %v)", tn.Value, tn.Mask, r, s, ok)
		}
	}
}
