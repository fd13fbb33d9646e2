package translate

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func views(t testing.TB, size uint64, bases ...uint64) []View {
	var vs []View
	for _, b := range bases {
		v, err := NewView(b, size)
		require.NoError(t, err)
		vs = append(vs, v)
	}
	return vs
}

func TestNewViewRejects(t *testing.T) {
	_, err := NewView(0x4000_0000, 3<<20)
	assert.ErrorContains(t, err, "heap size 0x300000 is not a power of two")
	_, err = NewView(0x4000_1000, 1<<20)
	assert.ErrorContains(t, err, "base 0x40001000 is not a non-zero multiple of heap size 0x100000")
	_, err = NewView(0, 1<<20)
	assert.Error(t, err)
}

// TestEveryOffset moves a pointer to every byte of a 1 MiB heap between three
// views and back.
func TestEveryOffset(t *testing.T) {
	const size = 1 << 20
	vs := views(t, size, 0x7f00_0010_0000, 0x2000_0000_0000, 0xc0_0000_0000)
	a, b, c := vs[0], vs[1], vs[2]
	for off := uint64(0); off < size; off++ {
		pa := a.At(off)
		pb := b.From(pa)
		if !b.Contains(pb) || b.Offset(pb) != off || a.From(pb) != pa || c.From(pb) != c.At(off) {
			t.Fatalf("offset %#x: a %#x -> b %#x -> a %#x, c %#x", off, pa, pb, a.From(pb), c.From(pb))
		}
	}
	for _, v := range vs {
		assert.Zero(t, v.From(0), "NULL stays NULL")
	}
	// The base itself (offset 0) is a real pointer, not NULL.
	assert.Equal(t, b.Base, b.From(a.Base))
}

func TestGuardIsTotal(t *testing.T) {
	v := views(t, 1<<30, 0x40_0000_0000)[0]
	for _, p := range []uint64{0, 1, v.Base - 1, v.Base + v.Size(), ^uint64(0), 0xdead_beef_cafe} {
		g := v.Guard(p)
		assert.True(t, v.Contains(g), "guard(%#x) = %#x", p, g)
		assert.Equal(t, p&v.Mask, v.Offset(g))
	}
}

func FuzzTranslate(f *testing.F) {
	f.Add(uint64(0), uint8(20), uint64(1), uint64(2))
	f.Add(uint64(0x7fff_ffff_ffff), uint8(36), uint64(3), uint64(77))
	f.Fuzz(func(t *testing.T, p uint64, k uint8, ba, bb uint64) {
		k = 20 + k%17 // 1 MiB .. 64 GiB
		size := uint64(1) << k
		// Bases: non-zero multiples of size within a 47-bit address space.
		slots := uint64(1)<<47>>k - 1
		a, err := NewView((ba%slots+1)<<k, size)
		require.NoError(t, err)
		b, err := NewView((bb%slots+1)<<k, size)
		require.NoError(t, err)
		pb := b.From(p)
		if p == 0 {
			require.Zero(t, pb)
			return
		}
		require.True(t, b.Contains(pb))
		require.Equal(t, p&(size-1), b.Offset(pb), "low bits kept")
		require.Equal(t, a.From(p), a.From(pb), "the source view does not matter")
		require.Equal(t, pb, b.From(a.From(pb)), "round trip")
	})
}
