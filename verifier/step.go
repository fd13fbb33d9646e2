package verifier

import (
	"github.com/kflex-go/kflex/bytecode"
)

// step applies instruction pc to s and passes the result to its successors.
func (a *analysis) step(pc int, s *State) error {
	in := a.slots[pc]
	if s.Locks == locksDiffer {
		return reject(pc, "paths meet here holding different numbers of locks")
	}
	if s.AllocsDiffer != 0 || s.hasAllocs() {
		if err := s.checkAllocs(pc); err != nil {
			return err
		}
	}
	switch cls := in.Op & 7; {
	case in.Op == bytecode.OpLdDW:
		if in.Src != 0 {
			return reject(pc, "lddw with pseudo source %d is not part of kflex's interface", in.Src)
		}
		s.set(in.Dst, scalar(Const(in.Imm64)))
	case cls == 0x04 || cls == 0x07:
		if err := a.alu(pc, s, in, cls == 0x07); err != nil {
			return err
		}
	case cls == 0x01:
		size := bytecode.MemSize(in.Op)
		if err := a.load(pc, s, in.Src, in.Off, size, in.Dst); err != nil {
			return err
		}
		if in.Op&0xe0 == 0x80 { // ldxs*: sign-extending
			s.set(in.Dst, signExtended(s.Regs[in.Dst], 8*size, true))
		}
	case cls == 0x02 || cls == 0x03:
		return a.storeOrAtomic(pc, s, in)
	case cls == 0x05 || cls == 0x06:
		return a.jump(pc, s, in)
	}
	a.flow(a.g.Succ[pc][0], s)
	return nil
}

// pointerAt resolves the memory operand [base+off] of size bytes: its kind
// and, for the stack, its offset from the frame top. It rejects what can never
// be valid.
func (a *analysis) pointerAt(pc int, s *State, base uint8, off int16, size int) (Access, int64, error) {
	r, err := a.read(pc, s, base)
	if err != nil {
		return 0, 0, err
	}
	o := r.Off + int64(off)
	switch r.Kind {
	case PtrStack:
		if o < -frameSize || o+int64(size) > 0 {
			return 0, 0, reject(pc, "invalid stack access off=%d size=%d", o, size)
		}
		return StackAccess, o, nil
	case PtrCtx:
		if o < 0 || o+int64(size) > int64(a.cfg.CtxSize) {
			return 0, 0, reject(pc, "invalid context access off=%d size=%d (context is %d bytes)", o, size, a.cfg.CtxSize)
		}
		return CtxAccess, o, nil
	case PtrMixed:
		return 0, 0, reject(pc, "R%d dereferenced: a pointer of different kinds or offsets on different paths", base)
	}
	if r.Checked && !r.MaybeNull && o > -guardReach && o+r.Span+int64(size) < guardReach {
		if r.SanPC > 0 {
			a.useful[r.SanPC-1] = true
		}
		return HeapChecked, 0, nil
	}
	// The access sanitizes the register in place: afterwards it is checked.
	// It is a new value, but one that still names the lock it may keep the
	// address of: the lock subprograms reached that lock through the same
	// mask-and-rebase, and the runtime releases a lock by its address
	// masked to a heap offset, which the rebase does not change.
	held := s.Held
	s.set(base, heapPointer(false, pc+1))
	s.Held = held
	return HeapSanitize, 0, nil
}

// ctxField checks a context access at offset o against the context's layout
// (Config.CtxFields), if it has one.
func (a *analysis) ctxField(pc int, o int64, size int, write bool) error {
	if len(a.cfg.CtxFields) == 0 {
		return nil
	}
	for _, f := range a.cfg.CtxFields {
		switch {
		case int64(f.Off) != o || f.Size != size:
		case write && !f.Writable:
			return reject(pc, "write to context field %s (off=%d), which is read-only", f.Name, o)
		default:
			return nil
		}
	}
	return reject(pc, "invalid context access off=%d size=%d: not a whole field of the context", o, size)
}

func (a *analysis) load(pc int, s *State, base uint8, off int16, size int, dst uint8) error {
	acc, o, err := a.pointerAt(pc, s, base, off, size)
	if err != nil {
		return err
	}
	a.note(pc, acc)
	if acc == StackAccess && !s.initialised(o, int64(size)) {
		return reject(pc, "invalid read from stack off %d size %d: not all bytes written", o, size)
	}
	if acc == CtxAccess {
		if err := a.ctxField(pc, o, size, false); err != nil {
			return err
		}
	}
	// Whatever was stored there, the slot may have changed since (see State).
	s.set(dst, scalar(Unknown.Truncate(size)))
	if acc == StackAccess && size == 8 && o%8 == 0 && dst < 10 {
		s.RefAt[dst] = s.RefAt[stackPlace(o)] // for ownership only (refs.go)
	}
	return nil
}

func (a *analysis) storeOrAtomic(pc int, s *State, in bytecode.Slot) error {
	size := bytecode.MemSize(in.Op)
	if in.Op&7 != 0x02 { // stx and atomics store a register, st an immediate
		if _, err := a.read(pc, s, in.Src); err != nil {
			return err
		}
	}
	atomic := in.Op&7 == 0x03 && in.Op&0xe0 == 0xc0
	if atomic && in.Imm == bytecode.LoadAcquire {
		if err := a.load(pc, s, in.Src, in.Off, size, in.Dst); err != nil {
			return err
		}
		a.flow(a.g.Succ[pc][0], s)
		return nil
	}
	acc, o, err := a.pointerAt(pc, s, in.Dst, in.Off, size)
	if err != nil {
		return err
	}
	a.note(pc, acc)
	if acc == CtxAccess {
		if err := a.ctxField(pc, o, size, true); err != nil {
			return err
		}
	}
	// A stack slot keeps what an 8-byte stx stores there whole; a store of
	// an allocation anywhere else publishes it (refs.go).
	switch src := int(in.Src); {
	case acc == StackAccess && in.Op&7 == 0x03 && !atomic:
		s.clobberStack(o, size, src)
	case acc == StackAccess:
		s.clobberStack(o, size, -1)
	case in.Op&7 != 0x02:
		s.publish(in.Src)
	}
	if atomic && in.Imm != bytecode.StoreRelease {
		// A read-modify-write: the old value must exist, and the result is
		// unknown; the fetching forms write a register.
		if acc == StackAccess && !s.initialised(o, int64(size)) {
			return reject(pc, "atomic operation on stack off %d size %d: not all bytes written", o, size)
		}
		switch {
		case in.Imm == bytecode.AtomicCmpXchg:
			if _, err := a.read(pc, s, 0); err != nil {
				return err
			}
			s.set(0, scalar(Unknown.Truncate(size)))
		case in.Imm&bytecode.AtomicFetch != 0:
			s.set(in.Src, scalar(Unknown.Truncate(size)))
		}
	}
	if acc == StackAccess {
		s.markInit(o, int64(size))
	}
	a.flow(a.g.Succ[pc][0], s)
	return nil
}
