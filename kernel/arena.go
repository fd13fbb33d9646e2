package kernel

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/sys/arena"
)

const (
	bpfFMmapable = 1 << 10
	pageSize     = arena.PageSize
	// MaxArenaSize is the kernel's limit on an arena.
	MaxArenaSize = arena.MaxSize
)

// GuardSize is the scratch memory mapped on each side of an arena in this
// process, as around a heap file's view, so that kflex's executors can run with
// the arena as their sandbox.
const GuardSize = heap.GuardSize

// Arena is a BPF arena mapped into this process at its user address (the map's
// map_extra), which is aligned to the arena's size, with every page populated
// and GuardSize bytes of scratch memory on each side. The mapping is package
// arena's, which userspace uses too; this type adds the map, to load programs
// that use it.
type Arena struct {
	m   *ebpf.Map
	mem *arena.Mapping
}

// NewArena creates an arena of size bytes (a power of two, a whole number of
// pages, at most 4 GiB), maps it and touches every page so that kernel programs
// see real memory everywhere.
func NewArena(size uint64) (*Arena, error) {
	if err := arena.CheckSize(size); err != nil {
		return nil, err
	}
	mem, err := arena.ReserveShared(uintptr(size), GuardSize)
	if err != nil {
		return nil, fmt.Errorf("arena: %w", err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "kflex_arena", Type: ebpf.Arena, Flags: bpfFMmapable,
		MaxEntries: uint32(size / pageSize), MapExtra: uint64(uintptr(mem.Base))})
	if err != nil {
		mem.Close()
		return nil, refused(fmt.Sprintf("BPF arena of %d bytes", size), "BPF_MAP_CREATE(ARENA)", err)
	}
	a := &Arena{m: m, mem: mem}
	if err := mem.Map(m.FD()); err != nil {
		a.Close()
		return nil, fmt.Errorf("arena: %w", err)
	}
	// Populate: a user-space write faults each page in for the kernel too.
	for off := uint64(0); off < size; off += pageSize {
		*(*byte)(unsafe.Add(mem.Base, off)) = 0
	}
	return a, nil
}

// Map is the arena's map.
func (a *Arena) Map() *ebpf.Map { return a.m }

// Base is the arena's user address (map_extra), aligned to Size.
func (a *Arena) Base() uint64 { return uint64(uintptr(a.mem.Base)) }

// Size is the arena's size in bytes.
func (a *Arena) Size() uint64 { return uint64(a.mem.Size) }

// Pointer is the arena's memory in this process.
func (a *Arena) Pointer() unsafe.Pointer { return a.mem.Base }

// Bytes is the arena's memory as a slice.
func (a *Arena) Bytes() []byte { return unsafe.Slice((*byte)(a.mem.Base), a.Size()) }

// Ref is the instruction that makes a program use this arena (an lddw of the
// map's file descriptor into dst). A program must contain it before the kernel
// lets it use addr_space_cast.
func (a *Arena) Ref(dst asm.Register) asm.Instruction {
	return asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Dst: dst, Src: bytecode.PseudoMapFD, Constant: int64(a.m.FD())}
}

// Close unmaps and releases the arena.
func (a *Arena) Close() error {
	err := a.mem.Close()
	if cerr := a.m.Close(); err == nil {
		err = cerr
	}
	return err
}

// OpenArena maps the arena behind fd, which another process created and
// passed over, at its user address (arena.Open): every process shares that one
// view. The Arena keeps a duplicate of fd. It fails with an error naming fd if
// fd is not an arena with a user address or this process already uses that
// address range.
func OpenArena(fd int) (*Arena, error) {
	mem, err := arena.Open(fd, GuardSize)
	if err != nil {
		return nil, err
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		mem.Close()
		return nil, fmt.Errorf("arena fd %d: %w", fd, err)
	}
	m, err := ebpf.NewMapFromFD(nfd)
	if err != nil {
		unix.Close(nfd)
		mem.Close()
		return nil, fmt.Errorf("arena fd %d: %w", fd, err)
	}
	return &Arena{m: m, mem: mem}, nil
}

// FD is the arena map's file descriptor, to pass to another process.
func (a *Arena) FD() int { return a.m.FD() }

// NewHeap formats a kflex heap in the whole arena (heap.CreateIn). The heap
// must be closed before the arena.
func (a *Arena) NewHeap(opts *heap.Options) (*heap.Heap, error) {
	return heap.CreateIn(a.mem.Base, a.Size(), a.name(), opts)
}

// OpenHeap attaches to the heap another process formatted in the arena.
func (a *Arena) OpenHeap() (*heap.Heap, error) { return heap.OpenIn(a.mem.Base, a.Size(), a.name()) }

func (a *Arena) name() string { return fmt.Sprintf("arena %d", a.m.FD()) }

// refused says what the kernel refused, in kflex's words, as the host probes
// do (hostprobe.Refusal): cilium/ebpf's text for EPERM suggests raising
// RLIMIT_MEMLOCK, which is beside the point on the kernels kflex needs (5.11+
// account BPF memory by cgroup) and misleads where the host forbids the call.
func refused(what, call string, err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("%s: %s: %w", what, call, err)
	}
	return &hostprobe.Refusal{Feature: what, Call: call, Errno: errno}
}
