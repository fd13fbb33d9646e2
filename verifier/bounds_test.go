package verifier

import (
	"math"
	"testing"

	"github.com/kflex-go/kflex/bytecode"
)

// comparisons is what each jump operation decides, on 64 bits.
var comparisons = map[uint8]func(v, k uint64) bool{
	0x10: func(v, k uint64) bool { return v == k },
	0x50: func(v, k uint64) bool { return v != k },
	0x20: func(v, k uint64) bool { return v > k },
	0x30: func(v, k uint64) bool { return v >= k },
	0xa0: func(v, k uint64) bool { return v < k },
	0xb0: func(v, k uint64) bool { return v <= k },
	0x60: func(v, k uint64) bool { return int64(v) > int64(k) },
	0x70: func(v, k uint64) bool { return int64(v) >= int64(k) },
	0xc0: func(v, k uint64) bool { return int64(v) < int64(k) },
	0xd0: func(v, k uint64) bool { return int64(v) <= int64(k) },
}

// checkRefinement runs refinement fn for every comparison, constant and
// range, and checks that every value the register may hold lands on the side
// the comparison (decided by holds) sends it to, inside that side's bounds,
// and that side is not called impossible. It returns how many cases it
// checked and how many refinements narrowed the register.
func checkRefinement(t *testing.T, fn func(op uint8, x Reg, k uint64) (Reg, Reg, bool, bool),
	holds func(op uint8, v, k uint64) bool, values, consts []uint64, ranges [][2]uint64) (checked, narrowed int) {
	within := func(r Reg, v uint64) bool {
		lo, hi := r.Bounds()
		return r.Val.Contains(v) && lo <= v && v <= hi
	}
	for _, rg := range ranges {
		x, ok := unknownScalar().withBounds(rg[0], rg[1])
		if !ok {
			t.Fatalf("range %v", rg)
		}
		for op := range comparisons {
			for _, k := range consts {
				taken, fall, takenOK, fallOK := fn(op, x, k)
				if taken != x || fall != x {
					narrowed++
				}
				for _, v := range values {
					if !within(x, v) {
						continue
					}
					side, sideOK, name := fall, fallOK, "fall"
					if holds(op, v, k) {
						side, sideOK, name = taken, takenOK, "taken"
					}
					if !sideOK || !within(side, v) {
						t.Errorf("op %#x k %#x x in %v: value %#x goes %s, which is %v (ok %v)", op, k, rg, v, name, side, sideOK)
					}
					checked++
				}
			}
		}
	}
	return checked, narrowed
}

// TestRefineSound: 64-bit comparisons refine soundly (checkRefinement).
func TestRefineSound(t *testing.T) {
	values := []uint64{0, 1, 2, 3, 5, 7, 99, 100, 101, 200, 1000, math.MaxInt64 - 1, math.MaxInt64,
		1 << 63, 1<<63 + 1, math.MaxUint64 - 1, math.MaxUint64}
	consts := []uint64{0, 1, 5, 100, 200, math.MaxInt64, 1 << 63, math.MaxUint64}
	ranges := [][2]uint64{{0, math.MaxUint64}, {0, 200}, {5, 100}, {1, 1 << 63}, {100, 100}}
	holds := func(op uint8, v, k uint64) bool { return comparisons[op](v, k) }
	checked, _ := checkRefinement(t, refine, holds, values, consts, ranges)
	t.Logf("%d cases", checked)
}

// TestRefine32Sound: 32-bit comparisons, which look at the low halves only,
// refine soundly; the ranges include values past 32 bits, where nothing may
// be learnt.
func TestRefine32Sound(t *testing.T) {
	values := []uint64{0, 1, 5, 99, 100, 101, math.MaxInt32 - 1, math.MaxInt32, 1 << 31, math.MaxUint32 - 1,
		math.MaxUint32, 1 << 32, 1<<32 + 5, 1<<32 + 100, math.MaxUint64}
	consts := []uint64{0, 1, 5, 100, math.MaxInt32, 1 << 31, math.MaxUint32, 1<<32 + 5, math.MaxUint64}
	ranges := [][2]uint64{{0, math.MaxUint64}, {0, 200}, {5, 100}, {0, math.MaxUint32}, {0, math.MaxInt32},
		{1 << 31, math.MaxUint32}, {0, 1<<32 + 100}}
	// The low halves, sign-extended for the signed orders, compared on 64 bits.
	holds := func(op uint8, v, k uint64) bool {
		if op >= 0x60 && op != 0xa0 && op != 0xb0 {
			return comparisons[op](uint64(int64(int32(v))), uint64(int64(int32(k))))
		}
		return comparisons[op](uint64(uint32(v)), uint64(uint32(k)))
	}
	checked, narrowed := checkRefinement(t, refine32, holds, values, consts, ranges)
	if narrowed == 0 {
		t.Error("no 32-bit comparison narrowed anything")
	}
	t.Logf("%d cases, %d refinements that narrowed", checked, narrowed)
}

// aluResult is RFC 9669's result of ALU operation op on a and b: on 64 bits,
// or (wide false) on the low halves, zero-extended.
func aluResult(op uint8, a, b uint64, wide bool) uint64 {
	mask, shifts := uint64(math.MaxUint64), uint64(63)
	if !wide {
		mask, shifts = math.MaxUint32, 31
		a, b = a&mask, b&mask
	}
	var v uint64
	switch op {
	case 0x00:
		v = a + b
	case 0x10:
		v = a - b
	case 0x20:
		v = a * b
	case 0x30: // x/0 = 0
		if b != 0 {
			v = a / b
		}
	case 0x90: // x%0 = x
		v = a
		if b != 0 {
			v = a % b
		}
	case 0x50:
		v = a & b
	case 0x60:
		v = a << (b & shifts)
	case 0x70:
		v = a >> (b & shifts)
	}
	return v & mask
}

// checkALUBounds checks bound (aluBounds, or aluBounds32 when not wide) on
// every ALU operation it handles and every pair of operand ranges: every pair
// of values in the ranges gives a result inside the result's bounds and tnum.
// It returns how many results bound narrowed beyond the tnum alone.
func checkALUBounds(t *testing.T, wide bool, ranges [][2]uint64, bound func(op uint8, d, s, r Reg) Reg) (narrowed int) {
	samples := func(rg [2]uint64) []uint64 {
		out := []uint64{rg[0], rg[1]}
		for v := rg[0]; v < rg[1] && v-rg[0] < 40; v++ {
			out = append(out, v)
		}
		return out
	}
	cls := uint8(0x04)
	if wide {
		cls = 0x07
	}
	for _, op := range []uint8{0x00, 0x10, 0x20, 0x30, 0x90, 0x50, 0x60, 0x70} {
		for _, dr := range ranges {
			for _, sr := range ranges {
				d, _ := unknownScalar().withBounds(dr[0], dr[1])
				s, _ := unknownScalar().withBounds(sr[0], sr[1])
				if op == 0x60 || op == 0x70 { // shifts by a constant only
					if sr[0] != sr[1] || sr[0] > 63 {
						continue
					}
					s = scalar(Const(sr[0]))
				}
				tn := scalar(scalarALU(bytecode.Slot{Op: cls | op | 0x08}, wide, d.Val, s.Val))
				r := bound(op, d, s, tn)
				if r != tn {
					narrowed++
				}
				lo, hi := r.Bounds()
				for _, a := range samples(dr) {
					for _, b := range samples(sr) {
						v := aluResult(op, a, b, wide)
						if v < lo || v > hi || !r.Val.Contains(v) {
							t.Fatalf("op %#x (64-bit %v) %#x, %#x = %#x outside %v (%#x..%#x) for %v, %v",
								op, wide, a, b, v, r, lo, hi, dr, sr)
						}
					}
				}
			}
		}
	}
	return narrowed
}

// TestALUBoundsSound: 64-bit operations keep sound bounds (checkALUBounds).
func TestALUBoundsSound(t *testing.T) {
	ranges := [][2]uint64{{0, 0}, {0, 3}, {1, 3}, {5, 100}, {0, 1023}, {1 << 62, 1<<62 + 9}, {math.MaxUint64 - 3, math.MaxUint64},
		{1 << 31, 1<<31 + 3}, {90, 100}}
	checkALUBounds(t, true, ranges, aluBounds)
}

// TestALUBounds32Sound: 32-bit operations, which work on the low halves and
// zero-extend, keep sound bounds; some ranges reach past 32 bits.
func TestALUBounds32Sound(t *testing.T) {
	ranges := [][2]uint64{{0, 0}, {0, 3}, {1, 3}, {5, 100}, {90, 100}, {0, 1023}, {math.MaxUint32 - 3, math.MaxUint32},
		{1 << 31, 1<<31 + 3}, {1<<32 - 2, 1<<32 + 2}, {1 << 40, 1<<40 + 5}, {3, 3}, {33, 33}}
	if checkALUBounds(t, false, ranges, aluBounds32) == 0 {
		t.Error("no 32-bit operation kept bounds beyond its tnum")
	}
}

// TestSignedBoundsIndex: an index tested non-negative, then below a bound,
// with signed comparisons indexes a checked pointer with no guard. Only
// unsigned bounds are kept: the other order (below a bound while possibly
// negative, then non-negative) and one test alone leave it guarded.
func TestSignedBoundsIndex(t *testing.T) {
	cfg := testConfig
	cfg.EntryArg = true
	for _, tc := range []struct {
		tests string
		want  Access
	}{
		{"jslt %r5, 0, +4\njsgt %r5, 1000, +3", HeapChecked},
		{"jsge %r5, 0, +1\nja +4\njsge %r5, 1001, +3", HeapChecked},
		{"jsge %r5, 1001, +4\njslt %r5, 0, +3", HeapAccess},
		{"jsgt %r5, 1000, +4\nmov %r0, 0", HeapAccess},
	} {
		src := "ldxdw %r5, [%r1+8]\n" + tc.tests + "\nlsh %r5, 3\nadd %r5, %r3\nldxdw %r0, [%r5+0]\nmov %r0, 0\nexit"
		insns, err := bytecode.Assemble(src)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Verify(insns, cfg)
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		var got Access
		for _, a := range r.Access {
			if a != NoAccess && a != CtxAccess {
				got = a
			}
		}
		if got != tc.want {
			t.Errorf("access %v, want %v\n%s", got, tc.want, src)
		}
	}
}
