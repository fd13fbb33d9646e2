// Package arena maps BPF arena maps into this process with raw system calls:
// the arena mapping both the application stack (userspace, which receives an
// arena's descriptor from the runtime) and the kernel oracle (which creates
// arenas) use, without cilium/ebpf.
//
// Layer 0 (system plumbing and the executor ABI: internal/sys/*, abi,
// internal/testutil), its upper part: it imports only internal/sys/vm.
//
// An arena shared by several processes is mapped in each at its user address
// (the map's map_extra, aligned to its size), so that a pointer into it means
// the same in all of them and in the kernel: Open reads the address from the
// kernel and refuses a descriptor that is not an arena with one.
package arena

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/sys/vm"
)

const (
	// MapType is BPF_MAP_TYPE_ARENA.
	MapType = 33
	// PageSize is the arena's page: its max_entries counts these.
	PageSize = 4096
	// MaxSize is the kernel's limit on an arena.
	MaxSize = 1 << 32
)

// CheckSize accepts the arena sizes kflex uses: a power of two, a whole
// number of pages, at most MaxSize (a heap's size is a power of two, and its
// view is aligned to it).
func CheckSize(size uint64) error {
	if size < PageSize || size > MaxSize || bits.OnesCount64(size) != 1 {
		return fmt.Errorf("arena size %d: want a power of two from %d to %d", size, PageSize, uint64(MaxSize))
	}
	return nil
}

// Info is what the kernel reports about a BPF map (struct bpf_map_info): the
// fields Open reads.
type Info struct {
	Type       uint32 // BPF_MAP_TYPE_*
	MaxEntries uint32 // for an arena, its size in pages
	Flags      uint32
	MapExtra   uint64 // for an arena, its user address (0: none)
}

// mapInfo is struct bpf_map_info up to map_extra (Linux 5.16), the last field
// read. A kernel whose structure is shorter (which has no arenas either) leaves
// the tail zero.
type mapInfo struct {
	typ, id, keySize, valueSize, maxEntries, flags  uint32
	name                                            [16]byte
	ifindex, btfVmlinuxValueTypeID                  uint32
	netnsDev, netnsIno                              uint64
	btfID, btfKeyTypeID, btfValueTypeID, btfVmlinux uint32
	mapExtra                                        uint64
}

// Stat asks the kernel about the BPF map behind fd (BPF_OBJ_GET_INFO_BY_FD).
// A descriptor that is not a BPF map is refused naming what it is.
func Stat(fd int) (Info, error) {
	var info mapInfo
	attr := struct { // the obj_info member of union bpf_attr
		fd, infoLen uint32
		info        unsafe.Pointer
	}{uint32(fd), uint32(unsafe.Sizeof(info)), unsafe.Pointer(&info)}
	_, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		if what := describe(fd); what != "" {
			return Info{}, fmt.Errorf("not a BPF map (%s): %w", what, e)
		}
		return Info{}, e
	}
	return Info{Type: info.typ, MaxEntries: info.maxEntries, Flags: info.flags, MapExtra: info.mapExtra}, nil
}

// describe names what fd refers to, as /proc/self/fd shows it ("/memfd:x
// (deleted)", "socket:[123]", "anon_inode:bpf-prog"), or "" if it cannot.
func describe(fd int) string {
	if fd < 0 {
		return ""
	}
	s, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return ""
	}
	return s
}

// Mapping is address space for an arena: Size bytes at Base, aligned to Size,
// with Guard bytes of scratch memory on each side once the arena is mapped.
type Mapping struct {
	Base  unsafe.Pointer
	Size  uintptr
	Guard uintptr
}

// Reserve reserves address space for an arena of size bytes, as
// inaccessible memory: at its user address at, or, if at is 0, at a free
// address aligned to size, which becomes the user address (map_extra) of an
// arena created for it. Map then maps the arena over it.
func Reserve(size, guard, at uintptr) (*Mapping, error) {
	if err := CheckSize(uint64(size)); err != nil {
		return nil, err
	}
	base, err := vm.Reserve(size, guard, at)
	if err != nil {
		return nil, err
	}
	return &Mapping{Base: base, Size: size, Guard: guard}, nil
}

// sharedFrom is where ReserveShared looks first: 64 TiB, far below the mmap
// area at the top of a 47-bit address space, where the kernel puts a free
// address and where every process's thread stacks and libraries go; clear of
// the Go heap's growth from 0xc000000000, and of the race detector's shadow
// (from 32 TiB) and metadata (from 48 TiB), so that a process built with
// -race can open an arena that one built without it created.
const sharedFrom = 0x4000_0000_0000

// ReserveShared is Reserve for a new arena whose address other processes,
// started later, must map too (Open): an arena placed where the kernel
// likes collided with a thread stack of a process that opened it (seen in
// kflex stress). It tries a few size-aligned addresses from sharedFrom,
// then takes the kernel's choice.
func ReserveShared(size, guard uintptr) (*Mapping, error) {
	if err := CheckSize(uint64(size)); err != nil {
		return nil, err
	}
	step := max(size, 4<<30)
	for at := uintptr(sharedFrom); at < sharedFrom+16*step; at += step {
		if m, err := Reserve(size, guard, at); err == nil {
			return m, nil
		}
	}
	return Reserve(size, guard, 0)
}

// Map maps the arena behind fd over the reservation, and scratch memory over
// its guards. The kernel accepts only the arena's user address and its whole
// length; MAP_FIXED replaces the reservation there.
func (m *Mapping) Map(fd int) error { return vm.MapShared(fd, m.Base, m.Size, m.Guard) }

// Close unmaps the arena and gives the reservation back. The mapping holds its
// own reference to the arena: the descriptor it was mapped from may be closed
// before.
func (m *Mapping) Close() error { return vm.Release(m.Base, m.Size, m.Guard) }

// Open maps the arena behind fd, which another process created and passed
// over, at its user address, with guard bytes of scratch memory on each side:
// every process shares that one view. It fails with an error naming fd if fd
// is not an arena with a user address, or if this process already uses that
// address range. The caller may close fd afterwards.
func Open(fd int, guard uintptr) (*Mapping, error) {
	info, err := Stat(fd)
	if err != nil {
		return nil, fmt.Errorf("arena fd %d: %w", fd, err)
	}
	m, err := open(fd, info, guard)
	if err != nil {
		return nil, fmt.Errorf("arena fd %d: %w", fd, err)
	}
	return m, nil
}

// errNoAddress: an arena created without map_extra is placed by each mmap
// where the kernel likes, so processes would not share addresses.
var errNoAddress = errors.New("an arena without a user address (map_extra 0): processes could not share its addresses")

// open checks what Stat said about fd and maps it.
func open(fd int, info Info, guard uintptr) (*Mapping, error) {
	if info.Type != MapType {
		return nil, fmt.Errorf("a BPF map of type %d, not an arena (type %d)", info.Type, MapType)
	}
	if info.MapExtra == 0 {
		return nil, errNoAddress
	}
	size := uint64(info.MaxEntries) * PageSize
	m, err := Reserve(uintptr(size), guard, uintptr(info.MapExtra))
	if err != nil {
		return nil, err
	}
	if err := m.Map(fd); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
