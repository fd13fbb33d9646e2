package jit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/sys/vm"
	"github.com/kflex-go/kflex/jit/interp"
)

// ErrMisaligned and the other run-time errors are the interpreter's.
var ErrMisaligned = interp.ErrMisaligned

// Layout of a sandbox: the stack frames, then the context copy, then free
// memory for programs that use the sandbox as their heap.
const (
	stackTop   = abi.StackSize * abi.MaxFrames
	ctxOffset  = stackTop
	MaxCtxSize = 64 << 10 // largest context a run can copy in
	guardSize  = 64 << 10
	// MinSandbox is the smallest sandbox: stack and context.
	MinSandbox = 128 << 10
)

// Program is compiled machine code, read-only and executable. Many Machines
// may run it at once.
type Program struct {
	code   []byte // mmap'd read+execute
	guards guardCounts
	starts []int // native offset of each slot's code: a call's return address names it (stack.go)

	shielded []bool // by slot: Options.Shielded
}

// Guards reports how many memory accesses the code guards and how many it
// leaves unguarded because they are provably inside the sandbox.
func (p *Program) Guards() (kept, elided int) { return p.guards.kept, p.guards.elided }

// Guard says which memory accesses compiled code confines to the sandbox.
type Guard int

const (
	// GuardAll confines every access: nothing a program does can fault.
	GuardAll Guard = iota
	// GuardStores is the paper's performance mode: loads go straight to the
	// address the program computed. A wild load faults and kills the process;
	// only for programs trusted not to make one.
	GuardStores
	// GuardNone confines nothing: a baseline for measuring the guards' cost.
	GuardNone
)

// Compile validates insns and generates machine code for them, every memory
// access guarded.
func Compile(insns asm.Instructions) (*Program, error) { return CompileGuarded(insns, GuardAll) }

// CompileGuarded is Compile with a choice of guards.
func CompileGuarded(insns asm.Instructions, g Guard) (*Program, error) {
	return CompileWith(insns, Options{Guard: g})
}

// Options control code generation.
type Options struct {
	Guard Guard
	// Access gives, by slot, what a verifier found about each memory
	// instruction (missing or GuardAccess: guarded as Guard says).
	Access []AccessMode
	// NoCancelCheck leaves the terminate word's test out of back-edges (the
	// budget count that returns to Go stays). For measuring what the test
	// costs (bench.MeasureCancel) only: such code cannot be cancelled in a
	// loop.
	NoCancelCheck bool
	// Shielded are slot ranges where a cancel does not stop the program (see
	// interp.Options.Shielded): their back-edges and helper calls do not test
	// the terminate word.
	Shielded []interp.Range
}

// shieldedSlots turns ranges into a flag per slot of a program of n slots
// (nil: none).
func shieldedSlots(ranges []interp.Range, n int) []bool {
	if len(ranges) == 0 {
		return nil
	}
	s := make([]bool, n)
	for _, r := range ranges {
		for slot := max(r.Start, 0); slot < min(r.End, n); slot++ {
			s[slot] = true
		}
	}
	return s
}

// AccessMode is how one memory instruction is to be confined.
type AccessMode uint8

const (
	// GuardAccess masks the address into a scratch register (the default).
	GuardAccess AccessMode = iota
	// NoGuard: proved inside the stack or context, or within guard reach of a
	// pointer an earlier access sanitized.
	NoGuard
	// SanitizeInPlace masks and rebases the base register itself, so that
	// later accesses through it can go unguarded.
	SanitizeInPlace
)

// CompileWith is Compile with options.
func CompileWith(insns asm.Instructions, o Options) (*Program, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	p, err := bytecode.NewProgram(insns)
	if err != nil {
		return nil, err
	}
	return CompileProgram(p, o)
}

// CompileProgram generates machine code for p, which is validated already
// (o.Access by p's slots, as verifier.Result gives them for its Program).
func CompileProgram(p *bytecode.Program, o Options) (*Program, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	text, starts, counts, err := compile(p.Slots(), o)
	if err != nil {
		return nil, err
	}
	n := (len(text) + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("jit: map code: %w", err)
	}
	copy(mem, text)
	// Written, then executable: never both.
	if err := unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("jit: protect code: %w", err)
	}
	return &Program{code: mem, guards: counts, starts: starts, shielded: shieldedSlots(o.Shielded, len(p.Slots()))}, nil
}

// Close frees the code. No Machine may be running it.
func (p *Program) Close() error {
	if p.code == nil {
		return nil
	}
	err := unix.Munmap(p.code)
	p.code = nil
	return err
}

// Size is the machine code's length in bytes (page-rounded).
func (p *Program) Size() int { return len(p.code) }

func (p *Program) entry() uint64 { return uint64(uintptr(unsafe.Pointer(&p.code[0]))) }

// Machine runs compiled programs on one goroutine at a time, in its sandbox.
type Machine struct {
	Helpers map[int32]interp.Helper
	// MayGoto is the number of may_goto instructions that fall through in one
	// run (0: abi.MayGotoBudget).
	MayGoto uint64
	// Deadline, if not zero, cancels a run still going then: it is checked
	// where the code returns to Go anyway, every abi.BackEdgeBudget
	// back-edges, so a time budget costs no timer and no thread wake-up.
	Deadline time.Time

	ctx     *execContext // in ctxMem
	ctxMem  []byte
	term    *uint32 // the terminate word generated code tests
	sandbox unsafe.Pointer
	size    uint64
	scratch uint64 // sandbox offset of the stack frames, then the context copy
	owned   bool   // the sandbox is this Machine's to unmap
}

// Region is memory a Machine runs programs in, mapped by someone else (a kflex
// heap): Size bytes at Base, a power of two and aligned to it, with 64 KiB of
// scratch guard memory mapped on both sides; Canon is the base of the canonical
// view. The Machine uses ScratchSize bytes at offset Scratch for its stack frames
// and context copy.
type Region struct {
	Base    unsafe.Pointer
	Size    uint64
	Canon   uint64
	Scratch uint64
}

// ScratchSize is the room a Machine needs in a Region.
const ScratchSize = stackTop + MaxCtxSize

// NewMachineIn makes a Machine whose sandbox is r, which must stay mapped until
// the Machine is closed.
func NewMachineIn(r Region) (*Machine, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if bits.OnesCount64(r.Size) != 1 || uint64(uintptr(r.Base))%r.Size != 0 || r.Scratch+ScratchSize > r.Size {
		return nil, fmt.Errorf("jit: region of %d bytes at %p (scratch at %#x): want a power of two, aligned, with %d bytes of scratch inside",
			r.Size, r.Base, r.Scratch, ScratchSize)
	}
	m, err := newMachine(r.Base, r.Size, r.Scratch)
	if err != nil {
		return nil, err
	}
	m.ctx.canonBase = r.Canon
	return m, nil
}

func newMachine(base unsafe.Pointer, size, scratch uint64) (*Machine, error) {
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("jit: context: %w", err)
	}
	m := &Machine{ctx: (*execContext)(unsafe.Pointer(&mem[0])), ctxMem: mem, sandbox: base, size: size, scratch: scratch}
	m.ctx.heapBase, m.ctx.heapMask = uint64(uintptr(base)), size-1
	m.ctx.canonBase = m.ctx.heapBase // a standalone sandbox is its own canonical view
	m.SetTerminateWord(&m.ctx.termWord)
	return m, nil
}

// NewMachine makes a Machine with a sandbox of size bytes (a power of two, at
// least MinSandbox).
func NewMachine(size uint64) (*Machine, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if size < MinSandbox || bits.OnesCount64(size) != 1 {
		return nil, fmt.Errorf("jit: sandbox size %d: want a power of two of at least %d", size, MinSandbox)
	}
	base, err := vm.Reserve(uintptr(size), guardSize, 0)
	if err != nil {
		return nil, fmt.Errorf("jit: sandbox: %w", err)
	}
	if err := vm.MapScratch(unsafe.Add(base, -guardSize), uintptr(size)+2*guardSize); err != nil {
		vm.Release(base, uintptr(size), guardSize)
		return nil, fmt.Errorf("jit: sandbox: %w", err)
	}
	m, err := newMachine(base, size, 0)
	if err != nil {
		vm.Release(base, uintptr(size), guardSize)
		return nil, err
	}
	m.owned = true
	return m, nil
}

// Close releases the sandbox and the execution context.
func (m *Machine) Close() error {
	if m.ctxMem == nil {
		return nil
	}
	var err error
	if m.owned {
		err = vm.Release(m.sandbox, uintptr(m.size), guardSize)
	}
	if uerr := unix.Munmap(m.ctxMem); err == nil {
		err = uerr
	}
	m.ctxMem, m.ctx = nil, nil
	return err
}

// Cancel asks the running program, or the next one to run, to stop at its
// next cancellation point, where it returns abi.ErrCancelled. Any goroutine
// may call it. The word stays set until ClearCancel.
func (m *Machine) Cancel() { atomic.StoreUint32(m.term, abi.Terminate) }

// Cancelled reports whether the terminate word is set: a helper that waits
// checks it to leave early.
func (m *Machine) Cancelled() bool { return m.terminated() }

// ClearCancel clears the terminate word, before a run that must not inherit
// an earlier cancel.
func (m *Machine) ClearCancel() {
	if m.terminated() { // a plain load; the store (an XCHG) only when needed
		atomic.StoreUint32(m.term, 0)
	}
}

// SetTerminateWord makes the program watch the 32-bit word at w (for example
// in memory shared with another process) instead of the Machine's own. w must
// stay valid while the Machine runs programs.
func (m *Machine) SetTerminateWord(w *uint32) {
	m.term = w
	m.ctx.terminate = uint64(uintptr(unsafe.Pointer(w)))
}

// Sandbox is the sandbox's memory.
func (m *Machine) Sandbox() []byte { return unsafe.Slice((*byte)(m.sandbox), m.size) }

// Base is the sandbox's address, the programs' view of it.
func (m *Machine) Base() uint64 { return uint64(uintptr(m.sandbox)) }

// Bytes returns n bytes of the sandbox at program address addr, for helpers.
func (m *Machine) Bytes(addr, n uint64, _ bool) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if d := addr - m.Base(); d >= m.size || n > m.size-d {
		return nil, fmt.Errorf("%w: %d bytes at %#x", interp.ErrOutOfBounds, n, addr)
	}
	return unsafe.Slice((*byte)(unsafe.Add(m.sandbox, addr-m.Base())), n), nil
}

// Run executes p with r1 pointing to a copy of ctx in the sandbox (0 if ctx
// is empty), r2 = len(ctx), r3 the context's first word masked into the
// sandbox (when it has one: a pointer argument no program can forge, which
// the verifier may take as checked) and r10 at the top of the stack; the copy
// is written back into ctx when the program ends. It returns r0.
func (m *Machine) Run(p *Program, ctx []byte) (uint64, error) {
	if len(ctx) > MaxCtxSize {
		return 0, fmt.Errorf("jit: context of %d bytes exceeds %d", len(ctx), MaxCtxSize)
	}
	ctxAt := m.scratch + ctxOffset
	if len(ctx) == 0 {
		return m.run(p, 0, nil)
	}
	sb := m.Sandbox()
	copy(sb[ctxAt:], ctx)
	r0, err := m.run(p, m.Base()+ctxAt, ctx)
	copy(ctx, sb[ctxAt:])
	return r0, err
}

// run is Run after the context is in the sandbox at address ctxAddr.
func (m *Machine) run(p *Program, ctxAddr uint64, ctx []byte) (uint64, error) {
	c := m.ctx
	c.regs = [11]uint64{}
	if len(ctx) > 0 {
		c.regs[abi.RegCtx], c.regs[abi.RegCtxLen] = ctxAddr, uint64(len(ctx))
	}
	if len(ctx) >= 8 {
		c.regs[abi.RegArg] = abi.EntryArg(binary.LittleEndian.Uint64(ctx), m.Base(), m.size-1)
	}
	c.regs[abi.RegFP] = m.Base() + m.scratch + stackTop
	c.resume, c.frameOff, c.budget = p.entry(), ctxFrames, abi.BackEdgeBudget
	c.mayGoto = m.MayGoto
	if c.mayGoto == 0 {
		c.mayGoto = abi.MayGotoBudget
	}
	for {
		enter(uintptr(unsafe.Pointer(c)))
		runtime.KeepAlive(p)
		pc := int(c.exitPC)
		switch c.exitCode {
		case exitReturn:
			return c.regs[0], nil
		case exitBudget:
			// Back in Go, but nothing in this loop is a safe point (enter has no
			// stack check): yield, so that a stop-the-world or a preemption the
			// runtime asked for happens now rather than never.
			runtime.Gosched()
			c.budget = abi.BackEdgeBudget
			if !m.Deadline.IsZero() && time.Now().After(m.Deadline) {
				m.Cancel() // stops at the next cancellation point: the back-edge it resumes at
			}
		case exitHelper:
			if m.terminated() && (p.shielded == nil || !p.shielded[pc]) {
				return 0, m.cancelled(p, pc, "at a helper call")
			}
			id := int32(c.exitArg)
			h := m.Helpers[id]
			if h == nil {
				return 0, &interp.RuntimeError{Insn: pc, Err: interp.ErrNoHelper, Detail: fmt.Sprintf("helper %d", id)}
			}
			v, err := h(m, c.regs[1], c.regs[2], c.regs[3], c.regs[4], c.regs[5])
			if err != nil {
				if errors.Is(err, abi.ErrCancelled) { // the helper stopped the program
					return 0, m.cancelled(p, pc, "in a helper")
				}
				return 0, &interp.RuntimeError{Insn: pc, Err: interp.ErrHelperFailed, Detail: fmt.Sprintf("helper %d: %v", id, err)}
			}
			c.regs[0] = v
		case exitCancel:
			return 0, m.cancelled(p, pc, "at a back-edge")
		case exitCallDepth:
			return 0, &interp.RuntimeError{Insn: pc, Err: interp.ErrCallDepth}
		case exitMisalign:
			return 0, &interp.RuntimeError{Insn: pc, Err: interp.ErrMisaligned}
		default:
			return 0, fmt.Errorf("jit: unknown exit code %d at instruction %d", c.exitCode, pc)
		}
	}
}

func (m *Machine) terminated() bool { return atomic.LoadUint32(m.term) != 0 }
