package heap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Heap is one process's view of a heap file. Its methods are safe for concurrent
// use. Close unmaps the view; memory obtained from it must not be used after.
type Heap struct {
	name   string // path, or "memfd:NAME", for error messages
	file   *os.File
	m      *mapping
	hdr    Header
	closed atomic.Bool
	users  atomic.Int32 // attached processes (BindOwner, UnbindOwner) that use this view

	allocOnce sync.Once
	alloc     *allocator

	headerOnce sync.Once
	header     [hdrEnd]byte // the header's immutable bytes, as h.hdr encodes them (RestoreHeader)
}

// RestoreHeader rewrites the header's immutable bytes (magic, parameters,
// layout, checksum) from h's own copy if they differ from it, and reports
// whether they did. Every attached process, and every extension, may write
// the heap's first page as any other: an extension's store through a NULL
// pointer lands there (the sandbox wraps addresses into the heap), and a
// header overwritten so leaves a file that no process can open ("not a kflex
// heap") until this puts it back. The root words after it are not touched.
func (h *Heap) RestoreHeader() bool {
	h.headerOnce.Do(func() { h.hdr.encode(h.header[:]) })
	b := unsafe.Slice((*byte)(h.m.base), hdrEnd)
	if bytes.Equal(b, h.header[:]) {
		return false
	}
	copy(b, h.header[:])
	return true
}

// Options control how a heap is created or mapped.
type Options struct {
	// Params for a new heap; zero fields take DefaultParams(Size) values, and a
	// zero Size means DefaultSize.
	Params
	// MapAt, if not zero, is the address (aligned to the heap size) at which this
	// process maps the heap. Tests use it to force two processes onto different
	// views; applications leave it zero.
	MapAt uintptr
	// Inspect maps an existing heap for Inspect and Check alone: its allocator
	// words are not checked at open, so that they can report what does not
	// parse. Allocating from such a view is not safe.
	Inspect bool
}

// FileError reports a problem with a named heap file.
type FileError struct {
	Name string
	Err  error
}

func (e *FileError) Error() string { return "heap " + e.Name + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

func fileErr(name string, err error) error { return &FileError{Name: name, Err: err} }

func (o *Options) params() Params {
	size := o.Size
	if size == 0 {
		size = DefaultSize
	}
	p := DefaultParams(size)
	if o.MaxProcs != 0 {
		p.MaxProcs = o.MaxProcs
	}
	if o.NodesPerProc != 0 {
		p.NodesPerProc = o.NodesPerProc
	}
	if o.Caches != 0 {
		p.Caches = o.Caches
	}
	return p
}

// Create makes a new heap file at path (which must not exist), sized sparsely to
// opts.Size, and maps it. The creator's view becomes the canonical view.
func Create(path string, opts *Options) (*Heap, error) {
	if opts == nil {
		opts = &Options{}
	}
	p := opts.params()
	if err := p.validate(); err != nil {
		return nil, fileErr(path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fileErr(path, err)
	}
	h, err := create(f, path, p, opts.MapAt)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return h, nil
}

// CreateMemfd makes a new anonymous heap (a memfd named name), sealed against
// resizing so that no process can truncate it under another's mapping.
func CreateMemfd(name string, opts *Options) (*Heap, error) {
	if opts == nil {
		opts = &Options{}
	}
	label := "memfd:" + name
	p := opts.params()
	if err := p.validate(); err != nil {
		return nil, fileErr(label, err)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fileErr(label, fmt.Errorf("memfd_create: %w", err))
	}
	f := os.NewFile(uintptr(fd), label)
	h, err := create(f, label, p, opts.MapAt)
	if err != nil {
		f.Close()
		return nil, err
	}
	return h, nil
}

// CreateIn formats a new heap in memory that someone else mapped, such as a
// BPF arena: size bytes at base (a power of two, base aligned to it), with
// GuardSize bytes of scratch memory on each side. name is for error messages.
// The Heap does not own the memory: Close leaves it mapped. This view becomes
// the canonical one.
func CreateIn(base unsafe.Pointer, size uint64, name string, opts *Options) (*Heap, error) {
	if opts == nil {
		opts = &Options{}
	}
	o := *opts
	o.Size = size
	p := o.params()
	if err := p.validate(); err != nil {
		return nil, fileErr(name, err)
	}
	m, err := lent(base, size, name)
	if err != nil {
		return nil, err
	}
	return (&Heap{name: name, m: m}).format(p), nil
}

// OpenIn attaches to the heap that CreateIn (possibly in another process)
// formatted in the memory at base, mapped as CreateIn requires.
func OpenIn(base unsafe.Pointer, size uint64, name string) (*Heap, error) {
	m, err := lent(base, size, name)
	if err != nil {
		return nil, err
	}
	hdr, err := ParseHeader(unsafe.Slice((*byte)(base), min(hdrEnd, size)), int64(size))
	if err != nil {
		return nil, fileErr(name, err)
	}
	h := &Heap{name: name, m: m, hdr: hdr}
	if err := h.checkState(); err != nil {
		return nil, fileErr(name, fmt.Errorf("heap state: %w", err))
	}
	return h, nil
}

// lent describes memory someone else mapped for CreateIn and OpenIn.
func lent(base unsafe.Pointer, size uint64, name string) (*mapping, error) {
	if size == 0 || uint64(uintptr(base))%size != 0 {
		return nil, fileErr(name, fmt.Errorf("memory at %p is not aligned to its size %#x", base, size))
	}
	return &mapping{base: base, size: uintptr(size)}, nil
}

func create(f *os.File, name string, p Params, mapAt uintptr) (*Heap, error) {
	if err := f.Truncate(int64(p.Size)); err != nil {
		return nil, fileErr(name, fmt.Errorf("size to %d bytes: %w", p.Size, err))
	}
	if isMemfd(name) {
		seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
			return nil, fileErr(name, fmt.Errorf("seal: %w", err))
		}
	}
	m, err := mapAligned(int(f.Fd()), uintptr(p.Size), mapAt)
	if err != nil {
		return nil, fileErr(name, err)
	}
	h := &Heap{name: name, file: f, m: m}
	return h.format(p), nil
}

// format writes a new heap's allocator state and header into h's memory.
func (h *Heap) format(p Params) *Heap {
	h.hdr = newHeader(p, uint64(uintptr(h.m.base)), time.Now().UnixNano(), uint32(os.Getpid()))
	initAllocator(h)
	// The header goes last: a process that opens the file while it is being built
	// sees no magic and is told it is not a heap, never a half-made one.
	h.hdr.encode(unsafe.Slice((*byte)(h.m.base), HeaderSize))
	return h
}

func isMemfd(name string) bool { return len(name) > 6 && name[:6] == "memfd:" }

// Open maps an existing heap file.
func Open(path string, opts *Options) (*Heap, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fileErr(path, err)
	}
	h, err := open(f, path, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return h, nil
}

// OpenFD maps the heap behind fd (for example a memfd received from another
// process). The Heap takes a duplicate of fd; the caller keeps its own.
func OpenFD(fd int, opts *Options) (*Heap, error) {
	name := fmt.Sprintf("fd %d", fd)
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fileErr(name, fmt.Errorf("dup: %w", err))
	}
	f := os.NewFile(uintptr(nfd), name)
	h, err := open(f, name, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return h, nil
}

func open(f *os.File, name string, opts *Options) (*Heap, error) {
	if opts == nil {
		opts = &Options{}
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fileErr(name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fileErr(name, fmt.Errorf("%w: not a regular file (%s)", ErrNotHeap, st.Mode().Type()))
	}
	// Read and check the header before mapping anything: a wrong or truncated file
	// must give an error, never a SIGBUS on a page past its end.
	buf := make([]byte, hdrEnd)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fileErr(name, fmt.Errorf("read header: %w", err))
	}
	hdr, err := ParseHeader(buf[:n], st.Size())
	if err != nil {
		return nil, fileErr(name, err)
	}
	m, err := mapAligned(int(f.Fd()), uintptr(hdr.Size), opts.MapAt)
	if err != nil {
		return nil, fileErr(name, err)
	}
	h := &Heap{name: name, file: f, m: m, hdr: hdr}
	if err := h.checkState(); err != nil && !opts.Inspect {
		m.unmap()
		return nil, fileErr(name, fmt.Errorf("heap state: %w", err))
	}
	return h, nil
}

// ErrInUse is Close's error while attached processes (mcs.Attach) use this
// view: unmapped under them, the heap would fault them at their next access.
var ErrInUse = errors.New("heap in use")

// Close unmaps this view and closes the file. It is safe to call more than
// once. While attached processes still use the view (mcs.Process, a
// serve.Runtime) it changes nothing and returns an error wrapping ErrInUse:
// detach them, or close the runtime, first.
func (h *Heap) Close() error {
	if n := h.users.Load(); n > 0 && !h.closed.Load() {
		return fileErr(h.name, fmt.Errorf("close: %w: %d attached processes use it (Detach them first)", ErrInUse, n))
	}
	if h.closed.Swap(true) {
		return nil
	}
	if h.alloc != nil {
		h.alloc.release()
	}
	if h.file == nil { // memory lent by CreateIn or OpenIn
		return nil
	}
	err := h.m.unmap()
	if cerr := h.file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fileErr(h.name, fmt.Errorf("close: %w", err))
	}
	return nil
}

// SharedFutexes reports whether a futex wake on this heap's memory reaches
// sleepers in other processes: true for heap files and memfds, false for
// memory lent by CreateIn or OpenIn, such as a BPF arena, where the kernel
// keys futexes per process only (internal/futex).
func (h *Heap) SharedFutexes() bool { return h.file != nil }

// Name is the file's path, or "memfd:NAME".
func (h *Heap) Name() string { return h.name }

// Fd is the heap file's descriptor, for passing to another process, or -1 for
// a heap in memory lent by CreateIn or OpenIn.
func (h *Heap) Fd() int {
	if h.file == nil {
		return -1
	}
	return int(h.file.Fd())
}

// Header returns the heap's decoded header.
func (h *Heap) Header() Header { return h.hdr }

// Size is the heap size S, a power of two.
func (h *Heap) Size() uint64 { return h.hdr.Size }

// Mask is S-1: the bits of a pointer that are its offset in the heap.
func (h *Heap) Mask() uint64 { return h.hdr.Size - 1 }

// Base is the address of the heap in this process's view.
func (h *Heap) Base() uint64 { return uint64(uintptr(h.m.base)) }

// CanonBase is the base of the canonical view: pointers stored in the heap use it.
func (h *Heap) CanonBase() uint64 { return h.hdr.CanonBase }

// At returns the address of byte off of the heap in this view. The offset is
// masked into the heap, so At never yields an address outside the mapping.
func (h *Heap) At(off uint64) unsafe.Pointer { return unsafe.Add(h.m.base, off&h.Mask()) }

// Uint32 and Uint64 return typed pointers to heap words, for atomic access.
func (h *Heap) Uint32(off uint64) *uint32 { return (*uint32)(h.At(off)) }
func (h *Heap) Uint64(off uint64) *uint64 { return (*uint64)(h.At(off)) }

// Root returns root word i (0 <= i < NumRoots) of the header page, where
// applications keep pointers to their top-level structures.
func (h *Heap) Root(i int) *uint64 {
	if i < 0 || i >= NumRoots {
		panic(fmt.Sprintf("heap: root %d outside [0, %d)", i, NumRoots))
	}
	return h.Uint64(hdrRoots + uint64(i)*8)
}

// Bytes returns n bytes of the heap at off as a slice. off+n must not pass the
// end of the heap.
func (h *Heap) Bytes(off, n uint64) []byte {
	if off > h.hdr.Size || n > h.hdr.Size-off {
		panic(fmt.Sprintf("heap: bytes [%#x, +%#x) outside a heap of %#x", off, n, h.hdr.Size))
	}
	return unsafe.Slice((*byte)(unsafe.Add(h.m.base, off)), n)
}
