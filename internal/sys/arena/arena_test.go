package arena

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/sys/vm"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const guard = 1 << 16

// memfd is a shared-memory file of size bytes, closed at the end of the test.
func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("not-an-arena", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Ftruncate(fd, size))
	return fd
}

// TestOpenRefusesNonMaps: a descriptor that is not a BPF map is refused with
// an error naming it and what it is, and maps nothing.
func TestOpenRefusesNonMaps(t *testing.T) {
	fd := memfd(t, 1<<20)
	_, err := Open(fd, guard)
	assert.ErrorContains(t, err, fmt.Sprintf("arena fd %d: not a BPF map (/memfd:not-an-arena", fd))
	_, err = Open(-1, guard)
	assert.ErrorContains(t, err, "arena fd -1")
}

// TestOpenRefusesOtherMaps: a BPF map of another type is refused naming its
// type. It needs BPF_MAP_CREATE, which unprivileged users and some containers
// lack.
func TestOpenRefusesOtherMaps(t *testing.T) {
	attr := struct{ typ, keySize, valueSize, maxEntries, flags uint32 }{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 3, 0}
	r, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		t.Skipf("skipped: BPF_MAP_CREATE of an array: %v", e)
	}
	fd := int(r)
	defer unix.Close(fd)
	info, err := Stat(fd)
	require.NoError(t, err)
	assert.Equal(t, Info{Type: unix.BPF_MAP_TYPE_ARRAY, MaxEntries: 3}, info)
	_, err = Open(fd, guard)
	assert.ErrorContains(t, err, fmt.Sprintf("arena fd %d: a BPF map of type 2, not an arena (type 33)", fd))
}

// freeAddress is an address aligned to size with room for the guards around
// it, free when it returns.
func freeAddress(t *testing.T, size uintptr) uintptr {
	t.Helper()
	p, err := vm.Reserve(size, guard, 0)
	require.NoError(t, err)
	require.NoError(t, vm.Release(p, size, guard))
	return uintptr(p)
}

// TestOpenMapsAtUserAddress runs what Open does after asking the kernel, on a
// memfd standing in for an arena (this host may refuse to create arenas): the
// memory lands at the user address, shared with the descriptor, with scratch
// guards on each side; a second mapping of the same range is refused.
func TestOpenMapsAtUserAddress(t *testing.T) {
	const size = 1 << 20
	fd := memfd(t, size)
	at := freeAddress(t, size)
	info := Info{Type: MapType, MaxEntries: size / PageSize, MapExtra: uint64(at)}
	m, err := open(fd, info, guard)
	require.NoError(t, err)
	assert.Equal(t, at, uintptr(m.Base))
	assert.Equal(t, uintptr(size), m.Size)

	mem := unsafe.Slice((*byte)(m.Base), size)
	mem[size-1] = 7
	buf := make([]byte, 1)
	_, err = unix.Pread(fd, buf, size-1)
	require.NoError(t, err)
	assert.Equal(t, byte(7), buf[0], "the mapping is the descriptor's memory")
	*(*byte)(unsafe.Add(m.Base, -1)) = 1 // the guards are scratch memory
	*(*byte)(unsafe.Add(m.Base, size)) = 1

	_, err = open(fd, info, guard)
	assert.ErrorContains(t, err, "in use", "the range is this process's already")
	require.NoError(t, m.Close())
	m, err = open(fd, info, guard)
	require.NoError(t, err, "Close gave the range back")
	require.NoError(t, m.Close())
}

// TestOpenChecksInfo: an arena must have a user address and a size kflex can
// place a heap in.
func TestOpenChecksInfo(t *testing.T) {
	fd := memfd(t, 1<<20)
	for _, c := range []struct {
		info Info
		want string
	}{
		{Info{Type: MapType, MaxEntries: 16}, "without a user address"},
		{Info{Type: MapType, MaxEntries: 3, MapExtra: 3 << 30}, "want a power of two"},
		{Info{Type: MapType, MaxEntries: 16, MapExtra: 1<<30 + PageSize}, "not aligned"},
		{Info{Type: 1, MaxEntries: 16, MapExtra: 1 << 30}, "a BPF map of type 1, not an arena"},
	} {
		_, err := open(fd, c.info, guard)
		assert.ErrorContains(t, err, c.want, "%+v", c.info)
	}
}

func TestCheckSize(t *testing.T) {
	for _, ok := range []uint64{PageSize, 1 << 20, MaxSize} {
		assert.NoError(t, CheckSize(ok), ok)
	}
	for _, bad := range []uint64{0, PageSize / 2, 3 << 20, 2 * MaxSize} {
		assert.ErrorContains(t, CheckSize(bad), "want a power of two", bad)
	}
}

// TestReserveShared: a new arena's address comes from the quiet range above
// sharedFrom, aligned to its size; a second one, while the first holds its
// range, takes the next address there.
func TestReserveShared(t *testing.T) {
	const size = 1 << 20
	a, err := ReserveShared(size, guard)
	require.NoError(t, err)
	defer a.Close()
	b, err := ReserveShared(size, guard)
	require.NoError(t, err)
	defer b.Close()
	for _, m := range []*Mapping{a, b} {
		assert.Zero(t, uintptr(m.Base)%size, "aligned to its size")
		assert.GreaterOrEqual(t, uintptr(m.Base), uintptr(sharedFrom))
	}
	assert.NotEqual(t, a.Base, b.Base)
	// Nothing else in a test process, with or without -race, uses the range:
	// the first arena gets its first address.
	assert.Equal(t, uintptr(sharedFrom), uintptr(a.Base))
}
