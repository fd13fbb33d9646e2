package verifier

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/kflex-go/kflex/abi"
)

// Kind is what a register or stack slot holds, as far as the analysis knows.
type Kind uint8

const (
	NotInit  Kind = iota // never written on some path: reading it is an error
	Scalar               // a number (heap pointers are numbers too: they are guarded)
	PtrCtx               // the context pointer plus Off
	PtrStack             // the current frame's top (r10) plus Off
	PtrMixed             // pointers of different kinds or offsets met at a join
)

func (k Kind) String() string {
	return [...]string{"uninit", "scalar", "ctx", "fp", "mixed"}[k]
}

// Reg is the abstract value of a register.
//
// A state holds one per register for every instruction, so its fields are
// laid out to keep it small.
type Reg struct {
	Kind Kind
	// Checked: a Scalar that lies in the sandbox, moved by Off to Off+Span
	// bytes. It got there by an earlier access that sanitized it in place
	// (masked and rebased), or from the runtime, which never hands out
	// anything else (SanPC 0). Accesses through it within reach of the
	// guard regions need no guard.
	Checked bool
	// MaybeNull: a checked value that may instead be 0 (a helper's result
	// not yet tested): its accesses are guarded.
	MaybeNull bool
	// Alias: 6-9 if this register holds the same value as that callee-saved
	// register (a mov made it so and neither changed since), else 0. The
	// cancellation table names the register holding each held lock's
	// address this way.
	Alias int8
	SanPC int32 // checked: 1 + the slot of the access that sanitized it, or 0
	Off   int64 // PtrCtx, PtrStack: constant offset from the region's base; checked Scalar: see Checked
	Span  int64
	Val   Tnum // Scalar: its possible bits
	// Scalar: its value's intervals, read unsigned and signed on 64 and 32
	// bits (bounds.go), kept in agreement with Val.
	B Bounds
}

func (r Reg) String() string {
	switch {
	case r.Checked && r.MaybeNull:
		return fmt.Sprintf("heap_or_null%+d..%+d", r.Off, r.Off+r.Span)
	case r.Checked && r.Span != 0:
		return fmt.Sprintf("heap%+d..%+d", r.Off, r.Off+r.Span)
	case r.Checked:
		return fmt.Sprintf("heap%+d", r.Off)
	case r.Kind == Scalar && r.Val.IsConst():
		return fmt.Sprintf("%d", int64(r.Val.Value))
	case r.Kind == Scalar:
		return fmt.Sprintf("scalar(%#x/%#x%s)", r.Val.Value, r.Val.Mask, r.boundsString())
	case r.Kind == PtrCtx, r.Kind == PtrStack:
		return fmt.Sprintf("%v%+d", r.Kind, r.Off)
	}
	return r.Kind.String()
}

// scalar is a number known by its tnum alone: each interval is the tnum's
// lowest and highest value in that reading, which already agree with each
// other (sync would leave them as they are; TestScalarSynced).
func scalar(t Tnum) Reg {
	r := Reg{Kind: Scalar, Val: t}
	r.B.setTnum(t)
	return r
}

func unknownScalar() Reg { return scalar(Unknown) }

// heapPointer is a number that lies in the sandbox (or is 0, if maybeNull),
// sanitized by the access at slot sanPC-1 (0: by the engine or a helper).
func heapPointer(maybeNull bool, sanPC int) Reg {
	r := unknownScalar()
	r.Checked, r.MaybeNull, r.SanPC = true, maybeNull, int32(sanPC)
	return r
}

// join is the least value covering both: what a register holds where paths
// meet. Where paths bring checked pointers, the result is checked over both
// ranges of offsets; where sanitizing accesses differ, both are useful (see
// analysis.useful).
func join(a, b Reg, useful []bool) Reg {
	j := joinValues(a, b, useful)
	if a.Alias == b.Alias && j.Kind != NotInit {
		j.Alias = a.Alias // the same copy on both paths
	}
	return j
}

func joinValues(a, b Reg, useful []bool) Reg {
	switch {
	case a == b:
		return a
	case a.Kind == NotInit || b.Kind == NotInit:
		return Reg{}
	case a.Kind == Scalar && b.Kind == Scalar:
		j := joinBounds(a, b)
		if !a.Checked || !b.Checked {
			return j
		}
		lo, hi := min(a.Off, b.Off), max(a.Off+a.Span, b.Off+b.Span)
		if (lo != a.Off || hi != a.Off+a.Span) && (lo != b.Off || hi != b.Off+b.Span) {
			lo, hi = widen(lo, hi)
		}
		if lo <= -guardReach || hi >= guardReach {
			return j
		}
		j.Checked, j.Off, j.Span, j.SanPC = true, lo, hi-lo, a.SanPC
		j.MaybeNull = a.MaybeNull || b.MaybeNull
		if a.SanPC != b.SanPC {
			for _, pc := range []int32{a.SanPC, b.SanPC} {
				if pc > 0 {
					useful[pc-1] = true
				}
			}
		}
		return j
	}
	return Reg{Kind: PtrMixed}
}

// widen rounds a range of offsets that grew past both ranges it joins out to
// powers of two (0 inwards), so that a pointer moved round a loop reaches its
// fixpoint, or leaves the guard regions' reach, in a few passes rather than
// one per step.
func widen(lo, hi int64) (int64, int64) {
	pow2 := func(v int64) int64 { return int64(1) << bits.Len64(uint64(v-1)) }
	switch {
	case lo >= 0:
		lo = 0
	default:
		lo = -pow2(-lo)
	}
	if hi > 0 {
		hi = pow2(hi)
	} else {
		hi = 0
	}
	return lo, hi
}

// frameSize is the eBPF stack frame.
const frameSize = abi.StackSize

// State is the abstract machine at one instruction: registers and the current
// frame's stack, byte by byte initialised or not.
//
// It keeps no values for the stack. Frames live in the heap (the sandbox
// reaches them, so that a stack pointer used as a number still finds its
// frame), where a heap store of the program, a helper or another process may
// change a spilled value between its store and its reload. A value read back
// from the stack is therefore a number: a spilled pointer comes back as one
// whose accesses are guarded, and a spilled constant as an unknown, so that a
// forged slot can never steer an unguarded access.
type State struct {
	Regs [11]Reg
	Init [frameSize / 64]uint64 // bit i: byte (frame top - frameSize + i) written
	// Locks taken in this frame and not released (Config.LockFunc);
	// locksDiffer where paths meet with different counts.
	Locks    uint8
	LockSite int // 1 + the slot of the last lock taken
	// Held: for each lock held (in the order taken), the callee-saved
	// register that holds its address, or 0 where none is known to.
	Held [maxLocks]int8
	// Allocs: the unpublished allocations this frame holds (refs.go), by
	// id: 1 + the slot of the allocation helper's call that made each, or 0
	// for an id not in use. RefAt: by place (r0-r9, then the 8-byte stack
	// slots from the top), 1 + the id of the allocation whose pointer it
	// keeps, or 0. AllocsDiffer: where paths met holding different ones, 1 +
	// the slot of one of them's call.
	Allocs       [maxAllocs]int32
	RefAt        [numPlaces]uint8
	AllocsDiffer int32
}

// maxLocks is how many locks a frame may hold at once.
const maxLocks = 8

// set writes v to register r. It is a new value there: no register is a
// copy of r any more, nor does r hold a lock's address or keep an allocation.
func (s *State) set(r uint8, v Reg) {
	for i := range s.Regs {
		if s.Regs[i].Alias == int8(r) {
			s.Regs[i].Alias = 0
		}
	}
	for i := range s.Held {
		if s.Held[i] == int8(r) {
			s.Held[i] = 0
		}
	}
	if v.Alias == int8(r) {
		v.Alias = 0
	}
	if r < 10 {
		s.RefAt[r] = 0
	}
	s.Regs[r] = v
}

// copyOf is the value of register r read by a mov: the same value, known to
// be a copy of r if r is callee-saved.
func copyOf(r uint8, v Reg) Reg {
	if r >= 6 && r <= 9 {
		v.Alias = int8(r)
	}
	return v
}

const locksDiffer = 0xff

func (s *State) initialised(off, size int64) bool {
	for i := off; i < off+size; i++ {
		b := i + frameSize
		if s.Init[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

func (s *State) markInit(off, size int64) {
	for i := off; i < off+size; i++ {
		b := i + frameSize
		s.Init[b/64] |= 1 << (b % 64)
	}
}

// joinInto merges o into s and reports whether s changed.
func (s *State) joinInto(o *State, useful []bool) bool {
	changed := s.joinAllocs(o) // first: it reads the registers each path has
	for i := range s.Regs {
		if j := join(s.Regs[i], o.Regs[i], useful); j != s.Regs[i] {
			s.Regs[i], changed = j, true
		}
	}
	for i := range s.Init {
		if j := s.Init[i] & o.Init[i]; j != s.Init[i] {
			s.Init[i], changed = j, true
		}
	}
	if s.Locks != o.Locks && s.Locks != locksDiffer {
		s.Locks, changed = locksDiffer, true
	}
	for i := range s.Held {
		if s.Held[i] != o.Held[i] && s.Held[i] != 0 {
			s.Held[i], changed = 0, true // a different register on each path
		}
	}
	return changed
}

// entry is the state at a subprogram's start: r1 the context (main) or the
// caller's arguments, r10 the frame top, nothing else.
func entry(main bool, ctxSize int) State {
	var s State
	s.Regs[abi.RegFP] = Reg{Kind: PtrStack}
	if main {
		s.Regs[abi.RegCtx] = Reg{Kind: PtrCtx}
		s.Regs[abi.RegCtxLen] = scalar(Const(uint64(ctxSize)))
	}
	return s
}

// constOf returns r's value if it is a known scalar.
func constOf(r Reg) (int64, bool) {
	if r.Kind == Scalar && r.Val.IsConst() {
		return int64(r.Val.Value), true
	}
	return 0, false
}

// guardReach is how far from a sanitized pointer an access may land and still
// be inside the sandbox or its 64 KiB guard regions (with room for the access).
const guardReach = 32 << 10

// fitsOffset reports whether off stays far from overflow in pointer arithmetic.
func fitsOffset(off int64) bool { return off > math.MinInt32 && off < math.MaxInt32 }
