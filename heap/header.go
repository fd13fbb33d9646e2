package heap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// Magic opens every heap file.
var Magic = [8]byte{'K', 'F', 'L', 'E', 'X', 'H', 'P', 0}

// Version is the layout version this package reads and writes. Any change to the
// header, the owner or node tables, or the allocator's metadata bumps it.
const Version = 3

// Limits on the size of a heap.
const (
	MinSize     = 1 << 20  // 1 MiB
	DefaultSize = 1 << 28  // 256 MiB
	MaxSize     = 1 << 36  // 64 GiB
	HeaderSize  = PageSize // the header owns the first page
	PageSize    = 4096     // the allocator's page, and the unit of layout
)

// Byte offsets of the header fields. The header is little-endian and immutable
// after creation; a CRC-32C over bytes [0, hdrChecksum) guards it.
const (
	hdrMagic        = 0   // [8]byte
	hdrVersion      = 8   // u32
	hdrHeaderSize   = 12  // u32
	hdrSize         = 16  // u64: heap size S, a power of two
	hdrCanonBase    = 24  // u64: base of the canonical view (pointers stored in the heap)
	hdrCreated      = 32  // u64: creation time, Unix nanoseconds
	hdrCreatorPID   = 40  // u32
	hdrMaxProcs     = 44  // u32: owner-table slots
	hdrNodesPerProc = 48  // u32: MCS queue nodes per owner slot
	hdrCaches       = 52  // u32: allocator per-thread cache slots
	hdrPageSize     = 56  // u32
	hdrClasses      = 60  // u32: number of size classes
	hdrOwnerOff     = 64  // u64: owner table
	hdrNodeOff      = 72  // u64: MCS node table
	hdrAllocOff     = 80  // u64: allocator state (page lock, class table)
	hdrCacheOff     = 88  // u64: per-thread cache slots
	hdrPageMapOff   = 96  // u64: one u32 per page
	hdrObjBitsOff   = 104 // u64: one bit per 8-byte granule: "an object starts here"
	hdrFreeBitsOff  = 112 // u64: one bit per page: "this page is free"
	hdrPagesOff     = 120 // u64: first page the allocator hands out
	hdrLockDirOff   = 128 // u64: the owner slots' lock directories (since version 3)
	hdrChecksum     = 136 // u32: CRC-32C of bytes [0, hdrChecksum)
	hdrEnd          = 140

	// Root words: mutable, outside the checksum. Applications keep the canonical
	// pointers to their top-level structures here, so another process can find them.
	hdrRoots = 512 // [NumRoots]u64
	NumRoots = 16
)

// Params are the creation parameters of a heap; Layout derives every offset
// from them, so two processes that agree on Params agree on the layout.
type Params struct {
	Size         uint64 `json:"size"`           // S: a power of two in [MinSize, MaxSize]
	MaxProcs     uint32 `json:"max_procs"`      // processes that can be attached at once
	NodesPerProc uint32 `json:"nodes_per_proc"` // MCS queue nodes per process: its goroutines waiting at once
	Caches       uint32 `json:"caches"`         // allocator cache slots (threads allocating at once)
}

// Layout gives the byte offset of each region of a heap.
type Layout struct {
	OwnerOff    uint64 `json:"owner_off"`
	NodeOff     uint64 `json:"node_off"`
	AllocOff    uint64 `json:"alloc_off"`
	CacheOff    uint64 `json:"cache_off"`
	PageMapOff  uint64 `json:"page_map_off"`
	ObjBitsOff  uint64 `json:"obj_bits_off"`
	FreeBitsOff uint64 `json:"free_bits_off"`
	PagesOff    uint64 `json:"pages_off"`
	LockDirOff  uint64 `json:"lock_dir_off"`
}

// Header is the decoded first page of a heap file.
type Header struct {
	Params
	Layout
	Version    uint32
	CanonBase  uint64 // base address of the canonical view
	Created    int64  // Unix nanoseconds
	CreatorPID uint32
}

// Sizes of the fixed records, shared with the mcs package and the bytecode side.
const (
	OwnerRecordSize = 64
	NodeSize        = 64
	cacheLine       = 64
)

// DefaultParams returns the parameters kflex uses for a heap of the given size.
func DefaultParams(size uint64) Params {
	p := Params{Size: size, MaxProcs: 64, NodesPerProc: 64}
	if size < 16<<20 {
		p.MaxProcs, p.NodesPerProc = 16, 32
	}
	p.Caches = uint32(min(max(size>>22, 2), 64))
	return p
}

func (p Params) validate() error {
	switch {
	case p.Size < MinSize || p.Size > MaxSize:
		return fmt.Errorf("size %d outside [%d, %d]", p.Size, MinSize, MaxSize)
	case bits.OnesCount64(p.Size) != 1:
		return fmt.Errorf("size %d is not a power of two", p.Size)
	case p.MaxProcs == 0 || p.MaxProcs > maxOwnerSlots:
		return fmt.Errorf("max procs %d outside [1, %d]", p.MaxProcs, maxOwnerSlots)
	case p.NodesPerProc == 0 || p.NodesPerProc > 1<<16:
		return fmt.Errorf("nodes per proc %d outside [1, 65536]", p.NodesPerProc)
	case p.Caches == 0 || p.Caches > 1024:
		return fmt.Errorf("caches %d outside [1, 1024]", p.Caches)
	}
	l := p.layout()
	if l.PagesOff+slabPages*PageSize > p.Size {
		return fmt.Errorf("size %d too small for its metadata (%d bytes)", p.Size, l.PagesOff)
	}
	return nil
}

// maxOwnerSlots is bounded by the 16-bit owner field of the lock word.
const maxOwnerSlots = 1<<16 - 2

func alignUp(x, a uint64) uint64 { return (x + a - 1) &^ (a - 1) }

// layout places the regions one after the other, each page-aligned.
func (p Params) layout() Layout {
	var l Layout
	pages := p.Size / PageSize
	off := uint64(HeaderSize)
	place := func(n uint64) uint64 {
		at := off
		off = alignUp(off+n, PageSize)
		return at
	}
	l.OwnerOff = place(uint64(p.MaxProcs) * OwnerRecordSize)
	l.NodeOff = place(uint64(p.MaxProcs) * uint64(p.NodesPerProc) * NodeSize)
	l.LockDirOff = place(uint64(p.MaxProcs) * LockDirPerProc * 8)
	l.AllocOff = place(allocStateSize)
	l.CacheOff = place(uint64(p.Caches) * cacheSlotSize)
	l.PageMapOff = place(pages * 4)
	l.ObjBitsOff = place(p.Size / 8 / 8)
	l.FreeBitsOff = place(alignUp(pages, 64) / 8)
	l.PagesOff = off
	return l
}

// newHeader builds the header for a new heap.
func newHeader(p Params, canonBase uint64, created int64, pid uint32) Header {
	return Header{Params: p, Layout: p.layout(), Version: Version,
		CanonBase: canonBase, Created: created, CreatorPID: pid}
}

// encode writes h into the first hdrEnd bytes of b.
func (h *Header) encode(b []byte) {
	le := binary.LittleEndian
	copy(b[hdrMagic:], Magic[:])
	le.PutUint32(b[hdrVersion:], h.Version)
	le.PutUint32(b[hdrHeaderSize:], HeaderSize)
	le.PutUint64(b[hdrSize:], h.Size)
	le.PutUint64(b[hdrCanonBase:], h.CanonBase)
	le.PutUint64(b[hdrCreated:], uint64(h.Created))
	le.PutUint32(b[hdrCreatorPID:], h.CreatorPID)
	le.PutUint32(b[hdrMaxProcs:], h.MaxProcs)
	le.PutUint32(b[hdrNodesPerProc:], h.NodesPerProc)
	le.PutUint32(b[hdrCaches:], h.Caches)
	le.PutUint32(b[hdrPageSize:], PageSize)
	le.PutUint32(b[hdrClasses:], numClasses)
	le.PutUint64(b[hdrOwnerOff:], h.OwnerOff)
	le.PutUint64(b[hdrNodeOff:], h.NodeOff)
	le.PutUint64(b[hdrAllocOff:], h.AllocOff)
	le.PutUint64(b[hdrCacheOff:], h.CacheOff)
	le.PutUint64(b[hdrPageMapOff:], h.PageMapOff)
	le.PutUint64(b[hdrObjBitsOff:], h.ObjBitsOff)
	le.PutUint64(b[hdrFreeBitsOff:], h.FreeBitsOff)
	le.PutUint64(b[hdrPagesOff:], h.PagesOff)
	le.PutUint64(b[hdrLockDirOff:], h.LockDirOff)
	le.PutUint32(b[hdrChecksum:], crc32.Checksum(b[:hdrChecksum], castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors that name what is wrong with a heap file. Each comes wrapped in a
// *FileError naming the file.
var (
	ErrNotHeap     = errors.New("not a kflex heap (bad magic)")
	ErrVersion     = errors.New("unsupported heap layout version")
	ErrCorrupt     = errors.New("corrupt heap header")
	ErrSize        = errors.New("bad heap size")
	ErrTruncated   = errors.New("heap file is truncated")
	ErrFileTooLong = errors.New("heap file is longer than its header says")
)

// ParseHeader decodes and checks a heap header. fileSize is the size of the file
// it was read from; it must equal the size the header records. It never panics,
// whatever b holds.
func ParseHeader(b []byte, fileSize int64) (Header, error) {
	var h Header
	le := binary.LittleEndian
	if len(b) < hdrEnd || fileSize < hdrEnd {
		if len(b) >= len(Magic) && [8]byte(b[:8]) != Magic {
			return h, ErrNotHeap
		}
		return h, fmt.Errorf("%w: %d bytes, a header needs %d", ErrTruncated, min(int64(len(b)), fileSize), hdrEnd)
	}
	if [8]byte(b[:8]) != Magic {
		return h, ErrNotHeap
	}
	if v := le.Uint32(b[hdrVersion:]); v != Version {
		return h, fmt.Errorf("%w: file has %d, this build reads %d", ErrVersion, v, Version)
	}
	if got, want := le.Uint32(b[hdrChecksum:]), crc32.Checksum(b[:hdrChecksum], castagnoli); got != want {
		return h, fmt.Errorf("%w: checksum %#08x, computed %#08x", ErrCorrupt, got, want)
	}
	h.Version = Version
	h.Size = le.Uint64(b[hdrSize:])
	h.CanonBase = le.Uint64(b[hdrCanonBase:])
	h.Created = int64(le.Uint64(b[hdrCreated:]))
	h.CreatorPID = le.Uint32(b[hdrCreatorPID:])
	h.MaxProcs = le.Uint32(b[hdrMaxProcs:])
	h.NodesPerProc = le.Uint32(b[hdrNodesPerProc:])
	h.Params.Caches = le.Uint32(b[hdrCaches:])
	if hs, ps, nc := le.Uint32(b[hdrHeaderSize:]), le.Uint32(b[hdrPageSize:]), le.Uint32(b[hdrClasses:]); hs != HeaderSize || ps != PageSize || nc != numClasses {
		return h, fmt.Errorf("%w: header size %d, page size %d, %d size classes", ErrCorrupt, hs, ps, nc)
	}
	if err := h.Params.validate(); err != nil {
		return h, fmt.Errorf("%w: %v", ErrSize, err)
	}
	if h.CanonBase&(h.Size-1) != 0 {
		return h, fmt.Errorf("%w: canonical base %#x not aligned to size %#x", ErrCorrupt, h.CanonBase, h.Size)
	}
	h.Layout = h.Params.layout()
	stored := Layout{
		OwnerOff: le.Uint64(b[hdrOwnerOff:]), NodeOff: le.Uint64(b[hdrNodeOff:]),
		AllocOff: le.Uint64(b[hdrAllocOff:]), CacheOff: le.Uint64(b[hdrCacheOff:]),
		PageMapOff: le.Uint64(b[hdrPageMapOff:]), ObjBitsOff: le.Uint64(b[hdrObjBitsOff:]),
		FreeBitsOff: le.Uint64(b[hdrFreeBitsOff:]), PagesOff: le.Uint64(b[hdrPagesOff:]),
		LockDirOff: le.Uint64(b[hdrLockDirOff:]),
	}
	if stored != h.Layout {
		return h, fmt.Errorf("%w: layout %+v does not follow from its parameters (%+v)", ErrCorrupt, stored, h.Layout)
	}
	switch {
	case uint64(fileSize) < h.Size:
		return h, fmt.Errorf("%w: %d bytes, header says %d", ErrTruncated, fileSize, h.Size)
	case uint64(fileSize) > h.Size:
		return h, fmt.Errorf("%w: %d bytes, header says %d", ErrFileTooLong, fileSize, h.Size)
	}
	return h, nil
}
