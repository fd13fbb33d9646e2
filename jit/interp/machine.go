package interp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/kflex-go/kflex/abi"
)

// Errors a program can stop with, wrapped in a *RuntimeError; a cancelled
// one stops with abi.ErrCancelled, as in the JIT.
var (
	ErrOutOfBounds  = errors.New("memory access outside the program's regions")
	ErrReadOnly     = errors.New("store to read-only memory")
	ErrMisaligned   = errors.New("misaligned atomic access")
	ErrCallDepth    = fmt.Errorf("call depth exceeds %d frames", abi.MaxFrames)
	ErrNoHelper     = errors.New("call to unknown helper")
	ErrInsnLimit    = errors.New("instruction budget exhausted")
	ErrFellOff      = errors.New("execution fell off the end of the program")
	ErrNoHeap       = errors.New("addr_space_cast without an attached heap")
	ErrHelperFailed = errors.New("helper failed")
)

// RuntimeError stops a program: which instruction, and why.
type RuntimeError struct {
	Insn   int
	Err    error
	Detail string
	// Stack is the call stack where a cancelled program stopped (Err is
	// abi.ErrCancelled), innermost first; nil for other errors.
	Stack []Frame
}

func (e *RuntimeError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("instruction %d: %v", e.Insn, e.Err)
	}
	return fmt.Sprintf("instruction %d: %v: %s", e.Insn, e.Err, e.Detail)
}

func (e *RuntimeError) Unwrap() error { return e.Err }

// Memory is a program's memory as its helpers see it: n bytes at a program
// address, if the program may access them.
type Memory interface {
	Bytes(addr, n uint64, write bool) ([]byte, error)
}

// Helper is a function a program calls by number, with r1-r5 as arguments; its
// result goes to r0. An error stops the program. The interpreter and the JIT
// call the same helpers.
type Helper func(mem Memory, r1, r2, r3, r4, r5 uint64) (uint64, error)

// region is memory a program may access: [start, start+size), at base in Go.
type region struct {
	start, size uint64
	base        unsafe.Pointer
	writable    bool
}

const (
	regStack = iota
	regCtx
	regHeap
	numRegions
)

// Machine runs programs on one goroutine at a time. It keeps its stack between
// runs; the memory it is given stays the caller's.
type Machine struct {
	// Helpers by number. Nil means none.
	Helpers map[int32]Helper
	// MaxInsns stops a run after this many instructions (0: no limit).
	MaxInsns uint64
	// MayGoto is the number of may_goto instructions that fall through in one
	// run before one jumps (0: abi.MayGotoBudget).
	MayGoto uint64
	// Executed counts instructions run by the last Run.
	Executed uint64
	// Deadline, if not zero, cancels a run still going then: it is checked
	// where the interpreter yields anyway, every abi.BackEdgeBudget
	// back-edges, so a time budget costs no timer.
	Deadline time.Time
	tracer   // Trace, in builds with -tags kflextrace (trace.go)

	stack   []byte
	regions [numRegions]region
	term    uint32 // set by Cancel
	// heapMask and heapCanon serve addr_space_cast: the heap's size-1 and the
	// base of the canonical ("user") view.
	heapMask, heapCanon uint64
}

// NewMachine returns a Machine with its own stack frames.
func NewMachine() *Machine {
	m := &Machine{stack: make([]byte, abi.StackSize*abi.MaxFrames)}
	m.regions[regStack] = region{start: uint64(uintptr(unsafe.Pointer(&m.stack[0]))),
		size: uint64(len(m.stack)), base: unsafe.Pointer(&m.stack[0]), writable: true}
	return m
}

// Cancel asks the running program, or the next one to run, to stop at its
// next cancellation point (a backward jump or a helper call); it then returns
// abi.ErrCancelled. Any goroutine may call it. It stays set until ClearCancel.
func (m *Machine) Cancel() { atomic.StoreUint32(&m.term, abi.Terminate) }

// Cancelled reports whether the terminate word is set: a helper that waits
// checks it to leave early.
func (m *Machine) Cancelled() bool { return atomic.LoadUint32(&m.term) != 0 }

// ClearCancel clears the terminate word, before a run that must not inherit
// an earlier cancel.
func (m *Machine) ClearCancel() {
	if atomic.LoadUint32(&m.term) != 0 {
		atomic.StoreUint32(&m.term, 0)
	}
}

// AttachHeap lets programs access size bytes at base (a heap mapping in this
// process, size a power of two). canonBase is the heap's canonical view, which
// addr_space_cast to the user view produces.
func (m *Machine) AttachHeap(base unsafe.Pointer, size, canonBase uint64) {
	m.regions[regHeap] = region{start: uint64(uintptr(base)), size: size, base: base, writable: true}
	m.heapMask, m.heapCanon = size-1, canonBase
}

// access returns the Go address of [addr, addr+size) if the program may touch it.
func (m *Machine) access(addr, size uint64, write bool) (unsafe.Pointer, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if d := addr - r.start; d < r.size && size <= r.size-d {
			if write && !r.writable {
				return nil, ErrReadOnly
			}
			return unsafe.Add(r.base, d), nil
		}
	}
	return nil, ErrOutOfBounds
}

// Bytes returns the n bytes of program memory at addr, for helpers.
func (m *Machine) Bytes(addr, n uint64, write bool) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	p, err := m.access(addr, n, write)
	if err != nil {
		return nil, fmt.Errorf("%w: %d bytes at %#x", err, n, addr)
	}
	return unsafe.Slice((*byte)(p), n), nil
}

type frame struct {
	ret   int
	saved [4]uint64 // r6-r9
	fp    uint64
}

// Run executes p with r1 pointing to ctx (nil: r1 = 0) and r2 = len(ctx).
// With a heap attached and a context of at least 8 bytes, r3 is the context's
// first word as an address in the heap (masked into it, as the JIT does). ctx
// is read and written in place. It returns r0.
func (m *Machine) Run(p *Program, ctx []byte) (uint64, error) {
	var r [11]uint64
	if len(ctx) > 0 {
		base := unsafe.Pointer(&ctx[0])
		m.regions[regCtx] = region{start: uint64(uintptr(base)), size: uint64(len(ctx)), base: base, writable: true}
		r[abi.RegCtx], r[abi.RegCtxLen] = uint64(uintptr(base)), uint64(len(ctx))
	}
	if h := m.regions[regHeap]; h.size != 0 && len(ctx) >= 8 {
		r[abi.RegArg] = abi.EntryArg(binary.LittleEndian.Uint64(ctx), h.start, m.heapMask)
	}
	defer func() { m.regions[regCtx] = region{} }()
	r[abi.RegFP] = m.regions[regStack].start + m.regions[regStack].size
	return m.run(p, &r)
}

func (m *Machine) run(p *Program, r *[11]uint64) (uint64, error) {
	var frames [abi.MaxFrames]frame
	depth := 0
	code := p.code
	limit := m.MaxInsns
	mayGoto := m.MayGoto
	if mayGoto == 0 {
		mayGoto = abi.MayGotoBudget
	}
	if limit == 0 {
		limit = ^uint64(0)
	}
	backEdges := abi.BackEdgeBudget
	n := uint64(0)
	pc := 0
	for {
		if pc >= len(code) {
			return m.fail(pc, n, ErrFellOff, "")
		}
		n++
		if n > limit {
			return m.fail(pc, n, ErrInsnLimit, fmt.Sprintf("%d instructions", limit))
		}
		if tracing {
			m.trace(pc, r)
		}
		in := &code[pc]
		op := in.op
		switch op & 7 {
		case clsALU64:
			src := in.k
			if op&0x08 != 0 {
				src = r[in.src]
			}
			d := &r[in.dst]
			switch op & 0xf0 {
			case 0x00:
				*d += src
			case 0x10:
				*d -= src
			case 0x20:
				*d *= src
			case 0x30:
				*d = div64(*d, src, in.off == 1)
			case 0x40:
				*d |= src
			case 0x50:
				*d &= src
			case 0x60:
				*d <<= src & 63
			case 0x70:
				*d >>= src & 63
			case 0x80:
				*d = -*d
			case 0x90:
				*d = mod64(*d, src, in.off == 1)
			case 0xa0:
				*d ^= src
			case 0xb0:
				switch in.off {
				case 0:
					*d = src
				case 1:
					v, err := m.cast(src, in.imm)
					if err != nil {
						return m.fail(pc, n, err, "")
					}
					*d = v
				case 8:
					*d = uint64(int64(int8(src)))
				case 16:
					*d = uint64(int64(int16(src)))
				case 32:
					*d = uint64(int64(int32(src)))
				}
			case 0xc0:
				*d = uint64(int64(*d) >> (src & 63))
			case 0xd0: // bswap
				*d = swap(*d, in.imm)
			}
		case clsALU:
			src := uint32(in.imm)
			if op&0x08 != 0 && op&0xf0 != 0xd0 {
				src = uint32(r[in.src])
			}
			d32 := uint32(r[in.dst])
			switch op & 0xf0 {
			case 0x00:
				d32 += src
			case 0x10:
				d32 -= src
			case 0x20:
				d32 *= src
			case 0x30:
				d32 = div32(d32, src, in.off == 1)
			case 0x40:
				d32 |= src
			case 0x50:
				d32 &= src
			case 0x60:
				d32 <<= src & 31
			case 0x70:
				d32 >>= src & 31
			case 0x80:
				d32 = -d32
			case 0x90:
				d32 = mod32(d32, src, in.off == 1)
			case 0xa0:
				d32 ^= src
			case 0xb0:
				switch in.off {
				case 0:
					d32 = src
				case 8:
					d32 = uint32(int32(int8(src)))
				case 16:
					d32 = uint32(int32(int16(src)))
				}
			case 0xc0:
				d32 = uint32(int32(d32) >> (src & 31))
			case 0xd0: // to little endian (a no-op but for truncation) or big endian
				if op&0x08 == 0 {
					r[in.dst] = truncate(r[in.dst], in.imm)
				} else {
					r[in.dst] = swap(r[in.dst], in.imm)
				}
				pc++
				continue
			}
			r[in.dst] = uint64(d32)
		case clsJMP, clsJMP32:
			if int(in.target) <= pc && op != opCall && op != 0x8d && op != 0x95 {
				// A backward jump (taken or not): a cancellation point, as in
				// the JIT, and now and then a yield.
				if atomic.LoadUint32(&m.term) != 0 && !in.shielded {
					return m.cancelled(pc, n, r, &frames, depth, "at a back-edge")
				}
				if backEdges--; backEdges == 0 {
					backEdges = abi.BackEdgeBudget
					runtime.Gosched()
					if !m.Deadline.IsZero() && time.Now().After(m.Deadline) {
						m.Cancel() // the next back-edge or helper call stops it
					}
				}
			}
			switch op {
			case 0x05:
				pc = int(in.target)
				continue
			case 0x06: // ja32 (gotol)
				pc = int(in.target)
				continue
			case 0xe5: // may_goto: falls through until the budget is spent
				if mayGoto == 0 {
					pc = int(in.target)
					continue
				}
				mayGoto--
				pc++
				continue
			case opCall, 0x8d:
				if op == opCall && in.src == 1 { // bpf-to-bpf call
					if depth+1 >= abi.MaxFrames {
						return m.fail(pc, n, ErrCallDepth, "")
					}
					frames[depth] = frame{ret: pc + 1, saved: [4]uint64{r[6], r[7], r[8], r[9]}, fp: r[10]}
					depth++
					r[10] -= abi.StackSize
					pc = int(in.target)
					continue
				}
				id := in.imm
				if op == 0x8d { // callx: helper number in dst
					id = int32(r[in.dst])
				}
				if atomic.LoadUint32(&m.term) != 0 && !in.shielded { // a helper call: a cancellation point
					return m.cancelled(pc, n, r, &frames, depth, "at a helper call")
				}
				h := m.Helpers[id]
				if h == nil {
					return m.fail(pc, n, ErrNoHelper, fmt.Sprintf("helper %d", id))
				}
				v, err := h(m, r[1], r[2], r[3], r[4], r[5])
				if err != nil {
					if errors.Is(err, abi.ErrCancelled) { // the helper stopped the program
						return m.cancelled(pc, n, r, &frames, depth, "in a helper")
					}
					return m.fail(pc, n, ErrHelperFailed, fmt.Sprintf("helper %d: %v", id, err))
				}
				r[0] = v
				pc++
				continue
			case 0x95: // exit
				if depth == 0 {
					m.Executed = n
					return r[0], nil
				}
				depth--
				f := &frames[depth]
				r[6], r[7], r[8], r[9], r[10] = f.saved[0], f.saved[1], f.saved[2], f.saved[3], f.fp
				pc = f.ret
				continue
			}
			a, b := r[in.dst], in.k
			if op&0x08 != 0 {
				b = r[in.src]
			}
			if op&7 == clsJMP32 {
				a, b = uint64(uint32(a)), uint64(uint32(b))
			}
			if cond(op, a, b) {
				pc = int(in.target)
				continue
			}
		case clsLDX:
			p, err := m.access(r[in.src]+uint64(int64(in.off)), uint64(in.size), false)
			if err != nil {
				return m.fail(pc, n, err, fmt.Sprintf("read of %d bytes at %#x", in.size, r[in.src]+uint64(int64(in.off))))
			}
			v := load(p, in.size)
			if op&0xe0 == modeMemSX {
				v = signExtend(v, in.size)
			}
			r[in.dst] = v
		case clsST, clsSTX:
			addr := r[in.dst] + uint64(int64(in.off))
			if op&0xe0 == modeAtomic {
				if err := m.atomic(in, r, addr); err != nil {
					return m.fail(pc, n, err, fmt.Sprintf("%d bytes at %#x", in.size, addr))
				}
				break
			}
			p, err := m.access(addr, uint64(in.size), true)
			if err != nil {
				return m.fail(pc, n, err, fmt.Sprintf("write of %d bytes at %#x", in.size, addr))
			}
			v := in.k
			if op&7 == clsSTX {
				v = r[in.src]
			}
			store(p, in.size, v)
		case clsLD: // lddw; Validate admits nothing else in this class
			r[in.dst] = in.k
			pc += 2
			continue
		}
		pc++
	}
}

// fail ends a run with a RuntimeError at pc. It is out of line, and takes pc and
// n by value, so that the dispatch loop keeps them in registers.
func (m *Machine) fail(pc int, n uint64, err error, detail string) (uint64, error) {
	m.Executed = n
	return 0, &RuntimeError{Insn: pc, Err: err, Detail: detail}
}

// cond evaluates a conditional jump of either width on operands already
// truncated for JMP32.
func cond(op uint8, a, b uint64) bool {
	is32 := op&7 == clsJMP32
	sa, sb := int64(a), int64(b)
	if is32 {
		sa, sb = int64(int32(a)), int64(int32(b))
	}
	switch op & 0xf0 {
	case 0x10:
		return a == b
	case 0x20:
		return a > b
	case 0x30:
		return a >= b
	case 0x40:
		return a&b != 0
	case 0x50:
		return a != b
	case 0x60:
		return sa > sb
	case 0x70:
		return sa >= sb
	case 0xa0:
		return a < b
	case 0xb0:
		return a <= b
	case 0xc0:
		return sa < sb
	case 0xd0:
		return sa <= sb
	}
	return false
}

func div64(a, b uint64, signed bool) uint64 {
	if b == 0 {
		return 0
	}
	if signed {
		return uint64(int64(a) / int64(b)) // MinInt64 / -1 == MinInt64 in Go
	}
	return a / b
}

func mod64(a, b uint64, signed bool) uint64 {
	if b == 0 {
		return a
	}
	if signed {
		return uint64(int64(a) % int64(b)) // MinInt64 % -1 == 0 in Go
	}
	return a % b
}

func div32(a, b uint32, signed bool) uint32 {
	if b == 0 {
		return 0
	}
	if signed {
		return uint32(int32(a) / int32(b))
	}
	return a / b
}

func mod32(a, b uint32, signed bool) uint32 {
	if b == 0 {
		return a
	}
	if signed {
		return uint32(int32(a) % int32(b))
	}
	return a % b
}

func swap(v uint64, width int32) uint64 {
	switch width {
	case 16:
		return uint64(bits.ReverseBytes16(uint16(v)))
	case 32:
		return uint64(bits.ReverseBytes32(uint32(v)))
	}
	return bits.ReverseBytes64(v)
}

func truncate(v uint64, width int32) uint64 {
	switch width {
	case 16:
		return uint64(uint16(v))
	case 32:
		return uint64(uint32(v))
	}
	return v
}

func signExtend(v uint64, size uint8) uint64 {
	switch size {
	case 1:
		return uint64(int64(int8(v)))
	case 2:
		return uint64(int64(int16(v)))
	}
	return uint64(int64(int32(v)))
}

// load and store are little-endian and may be unaligned (amd64 and arm64
// allow it for plain accesses).
func load(p unsafe.Pointer, size uint8) uint64 {
	switch size {
	case 1:
		return uint64(*(*uint8)(p))
	case 2:
		return uint64(*(*uint16)(p))
	case 4:
		return uint64(*(*uint32)(p))
	}
	return *(*uint64)(p)
}

func store(p unsafe.Pointer, size uint8, v uint64) {
	switch size {
	case 1:
		*(*uint8)(p) = uint8(v)
	case 2:
		*(*uint16)(p) = uint16(v)
	case 4:
		*(*uint32)(p) = uint32(v)
	default:
		*(*uint64)(p) = v
	}
}

// atomic runs an atomic instruction at addr.
func (m *Machine) atomic(in *insn, r *[11]uint64, addr uint64) error {
	write := in.atomic != 0x100 // load-acquire only reads
	p, err := m.access(addr, uint64(in.size), write)
	if err != nil {
		return err
	}
	if addr%uint64(in.size) != 0 {
		return ErrMisaligned
	}
	src := &r[in.src]
	switch in.atomic {
	case 0x100: // load-acquire
		switch in.size {
		case 4:
			r[in.dst] = uint64(atomic.LoadUint32((*uint32)(p)))
		case 8:
			r[in.dst] = atomic.LoadUint64((*uint64)(p))
		default: // byte and half loads are single-copy atomic and acquire on amd64/arm64 TSO-or-ldar paths
			r[in.dst] = load(p, in.size)
		}
		return nil
	case 0x110: // store-release
		switch in.size {
		case 4:
			atomic.StoreUint32((*uint32)(p), uint32(*src))
		case 8:
			atomic.StoreUint64((*uint64)(p), *src)
		default:
			store(p, in.size, *src)
		}
		return nil
	}
	var old uint64
	if in.size == 4 {
		old = uint64(rmw(&atomics32, (*uint32)(p), in.atomic, uint32(*src), uint32(r[0])))
	} else {
		old = rmw(&atomics64, (*uint64)(p), in.atomic, *src, r[0])
	}
	switch {
	case in.atomic&^1 == 0xf0: // cmpxchg returns the old value in r0
		r[0] = old
	case in.atomic&1 != 0: // fetch variants return it in src
		*src = old
	}
	return nil
}

// atomics are sync/atomic's operations for one word size.
type atomics[T uint32 | uint64] struct {
	load    func(*T) T
	cas     func(*T, T, T) bool
	swap    func(*T, T) T
	add     func(*T, T) T // returns the new value
	or, and func(*T, T) T // return the old value
}

var (
	atomics32 = atomics[uint32]{atomic.LoadUint32, atomic.CompareAndSwapUint32, atomic.SwapUint32,
		atomic.AddUint32, atomic.OrUint32, atomic.AndUint32}
	atomics64 = atomics[uint64]{atomic.LoadUint64, atomic.CompareAndSwapUint64, atomic.SwapUint64,
		atomic.AddUint64, atomic.OrUint64, atomic.AndUint64}
)

// rmw applies read-modify-write operation op (an atomic instruction's
// immediate) with operand s to *w and returns the old value; expected is r0 for
// cmpxchg.
func rmw[T uint32 | uint64](a *atomics[T], w *T, op uint16, s, expected T) T {
	switch op &^ 1 {
	case 0x00:
		return a.add(w, s) - s
	case 0x40:
		return a.or(w, s)
	case 0x50:
		return a.and(w, s)
	case 0xa0:
		for {
			if old := a.load(w); a.cas(w, old, old^s) {
				return old
			}
		}
	case 0xe0:
		return a.swap(w, s)
	case 0xf0:
		for {
			if old := a.load(w); old != expected || a.cas(w, old, s) {
				return old
			}
		}
	}
	panic(fmt.Sprintf("interp: atomic operation %#x passed validation", op))
}

// cast implements addr_space_cast against the attached heap: imm 1 moves a
// pointer into this machine's view, imm 1<<16 into the canonical view stored in
// the heap. NULL stays NULL.
func (m *Machine) cast(p uint64, imm int32) (uint64, error) {
	h := &m.regions[regHeap]
	if h.size == 0 {
		return 0, ErrNoHeap
	}
	if p == 0 {
		return 0, nil
	}
	if imm == 1 {
		return p&m.heapMask | h.start, nil
	}
	return p&m.heapMask | m.heapCanon, nil
}
