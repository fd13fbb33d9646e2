package verifier

import (
	"fmt"
	"math"
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
type Reg struct {
	Kind Kind
	Off  int64 // PtrCtx, PtrStack: constant offset from the region's base; checked Scalar: from the sanitized value
	Val  Tnum  // Scalar: its possible bits
	// Checked: a Scalar that an earlier access sanitized into the sandbox in
	// place (masked and rebased), plus Off. Accesses through it within reach
	// of the guard regions need no guard.
	Checked bool
	SanPC   int // checked: 1 + the slot of the access that sanitized it
}

func (r Reg) String() string {
	switch r.Kind {
	case Scalar:
		if r.Val.IsConst() {
			return fmt.Sprintf("%d", int64(r.Val.Value))
		}
		return fmt.Sprintf("scalar(%#x/%#x)", r.Val.Value, r.Val.Mask)
	case PtrCtx, PtrStack:
		return fmt.Sprintf("%v%+d", r.Kind, r.Off)
	}
	if r.Checked {
		return fmt.Sprintf("heap%+d", r.Off)
	}
	return r.Kind.String()
}

func scalar(t Tnum) Reg  { return Reg{Kind: Scalar, Val: t} }
func unknownScalar() Reg { return scalar(Unknown) }

// join is the least value covering both: what a register holds where paths meet.
func join(a, b Reg) Reg {
	switch {
	case a == b:
		return a
	case a.Kind == NotInit || b.Kind == NotInit:
		return Reg{}
	case a.Kind == Scalar && b.Kind == Scalar:
		j := scalar(a.Val.Union(b.Val))
		if a.Checked && b.Checked && a.Off == b.Off && a.SanPC == b.SanPC {
			j.Checked, j.Off, j.SanPC = true, a.Off, a.SanPC
		}
		return j
	}
	return Reg{Kind: PtrMixed}
}

// frameSize is the eBPF stack frame.
const frameSize = 512

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
	Init [frameSize / 64]uint64 // bit i: byte (frame top - 512 + i) written
}

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
func (s *State) joinInto(o *State) bool {
	changed := false
	for i := range s.Regs {
		if j := join(s.Regs[i], o.Regs[i]); j != s.Regs[i] {
			s.Regs[i], changed = j, true
		}
	}
	for i := range s.Init {
		if j := s.Init[i] & o.Init[i]; j != s.Init[i] {
			s.Init[i], changed = j, true
		}
	}
	return changed
}

// entry is the state at a subprogram's start: r1 the context (main) or the
// caller's arguments, r10 the frame top, nothing else.
func entry(main bool, ctxSize int) State {
	var s State
	s.Regs[10] = Reg{Kind: PtrStack}
	if main {
		s.Regs[1] = Reg{Kind: PtrCtx}
		s.Regs[2] = scalar(Const(uint64(ctxSize)))
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
