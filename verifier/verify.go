package verifier

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
)

// Helper is what the verifier knows of a helper: how many argument registers
// (r1 upwards) it reads, and what each may hold.
type Helper struct {
	Name string
	Args int
	// Params, if set, constrains r1 upwards in order (shorter than Args:
	// the rest are ParamAny).
	Params []Param
	// HeapOrNull: the helper returns an address in the sandbox (the engine's
	// view of the heap) or 0. Past a test against 0 the result needs no
	// guard within reach of the guard regions; before, its first access
	// sanitizes it.
	HeapOrNull bool
}

// Param is what a helper accepts in one argument register.
type Param uint8

const (
	ParamAny Param = iota // any value the program set
	// ParamNumber: a number (a heap address is one). A context or frame
	// pointer is refused: it is the engine's address of memory outside the
	// heap, which a helper should neither see nor keep.
	ParamNumber
	// ParamNonNull: a number proven not 0 on every path (a heap-or-NULL
	// result past its test, or a number tested against 0).
	ParamNonNull
)

// CtxField is one field of the context's layout (Config.CtxFields).
type CtxField struct {
	Name      string
	Off, Size int
	Writable  bool
}

// Config is the environment a program is verified for.
type Config struct {
	// CtxFields, if set, is the context's layout: every context access must
	// be one whole field, and stores (atomics too) only to writable ones.
	CtxFields []CtxField
	CtxSize   int              // bytes r1 points to at entry
	Helpers   map[int32]Helper // the helpers the program may call
	MaxInsns  int              // instructions the analysis may process (0: 1,000,000)
	// MaxSlots is the largest program accepted (0: 2^20 slots, the
	// kernel's limit); MaxStates the most states the analysis may keep, one
	// per join point reached (0: 2^17, about 130 MB).
	MaxSlots, MaxStates int
	// LockFunc and UnlockFunc name the subprograms that take and release a
	// lock (kflex's mcs_lock and mcs_unlock): every subprogram must return
	// holding as many locks as it took, never release more, and reach each
	// instruction holding the same number on every path. The count at each
	// cancellation point is in Result.CancelTable.
	LockFunc, UnlockFunc string
	// EntryArg: at entry r3 holds the context's first word masked into the
	// sandbox by the engine (jit.Machine.Run, interp with a heap), so it is a
	// checked pointer no access had to sanitize.
	EntryArg bool
}

// Access says how a memory instruction reaches memory, on every path.
type Access uint8

const (
	NoAccess    Access = iota
	StackAccess        // through the frame pointer, in bounds: needs no guard
	CtxAccess          // into the context, in bounds: needs no guard
	HeapAccess         // through a number: guarded (into a scratch register)
	// HeapSanitize: through a number, which the access first sanitizes in
	// place (masked into the sandbox and rebased), so that later accesses
	// through the same register need no guard.
	HeapSanitize
	// HeapChecked: through a register an earlier access sanitized, within
	// reach of the guard regions: no guard.
	HeapChecked
)

// Result is a verified program's analysis.
type Result struct {
	// Program is the program verified: the findings below are by its slots.
	Program        *bytecode.Program
	CFG            *CFG
	Access         []Access // per slot, for memory instructions
	InsnsProcessed int      // instruction visits until the fixpoint
	States         int      // states kept: one per join point or cancellation point reached
	PeakStates     int      // the most states held at once: kept, and passed on but not yet stepped
	GuardsTotal    int      // memory instructions
	GuardsElided   int      // of which provably in bounds
	CancelPoints   []int    // back-edges and helper calls, by slot
	// CancelTable: what is held at each cancellation point, in
	// CancelPoints' order, for the runtime to release when it stops the
	// program there (points.go).
	CancelTable []CancelPoint
	// CallTable: what a caller holds while the subprogram it calls runs,
	// at each bpf-to-bpf call site the analysis reached, by slot. A stopped
	// program's frames are its stop (CancelTable) and its callers' calls
	// (CallTable): HeldAt finds either.
	CallTable []CancelPoint
}

// Verify validates insns (bytecode.NewProgram, its errors reported as an
// *Error) and verifies them: VerifyProgram.
func Verify(insns asm.Instructions, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	slots := 0
	for i := range insns {
		slots += int(insns[i].Width())
	}
	if err := cfg.checkSize(slots); err != nil { // before anything is built for it
		return nil, err
	}
	p, err := bytecode.NewProgram(insns)
	if err != nil {
		return nil, rejection(err)
	}
	return VerifyProgram(p, cfg)
}

// VerifyProgram checks p for cfg and returns its analysis, whose Program is p
// (the form the engines compile with the Result's findings), or an *Error
// naming the first instruction found at fault, with the abstract registers
// there in its Log.
func VerifyProgram(p *bytecode.Program, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if err := cfg.checkSize(p.Len()); err != nil {
		return nil, err
	}
	g, err := buildCFG(p)
	if err != nil {
		return nil, err
	}
	r, err := newAnalysis(p, g, cfg).run()
	var e *Error
	if errors.As(err, &e) && !strings.HasPrefix(e.Reason, "program too complex") {
		// The analysis kept states at join points only; the log shows the
		// registers before every instruction of the path. On a rejection,
		// analyse again keeping every state, and take its log if it fails
		// at the same instruction.
		full := newAnalysis(p, g, cfg)
		full.keepAll = true
		var fe *Error
		if _, ferr := full.run(); errors.As(ferr, &fe) && fe.Insn == e.Insn {
			e.Log = fe.Log
		}
	}
	if r != nil {
		r.Program = p
	}
	return r, err
}

// withDefaults fills in the limits cfg leaves 0.
func (cfg Config) withDefaults() Config {
	if cfg.MaxInsns == 0 {
		cfg.MaxInsns = 1_000_000
	}
	if cfg.MaxStates == 0 {
		cfg.MaxStates = 1 << 17
	}
	if cfg.MaxSlots == 0 {
		cfg.MaxSlots = 1 << 20
	}
	return cfg
}

// checkSize rejects a program of more than MaxSlots slots.
func (cfg Config) checkSize(slots int) error {
	if slots > cfg.MaxSlots {
		return reject(cfg.MaxSlots, "program too large: %d instructions (at most %d)", slots, cfg.MaxSlots)
	}
	return nil
}

func newAnalysis(p *bytecode.Program, g *CFG, cfg Config) *analysis {
	return &analysis{cfg: cfg, g: g, slots: p.Slots(), insns: p.Instructions(), start: p.Starts()}
}

// The analysis keeps a state only where it must: where paths meet (a join
// point: two or more predecessors, a subprogram's entry), at cancellation
// points and at bpf-to-bpf calls (whose tables read it). Every other instruction has one predecessor,
// so each state that reaches it is stepped on directly, never stored: memory
// grows with the join points, not with the program (a state is about 1 KB).
type analysis struct {
	cfg     Config
	g       *CFG
	slots   []bytecode.Slot
	keep    []bool   // by slot: the analysis stores its state (see above)
	keepAll bool     // store every state (the soundness oracle checks them all)
	in      []*State // joined state at each kept slot's entry (nil: not reached yet)
	reached []bool
	access  []Access
	work    []workItem
	queued  []bool
	useful  []bool // by slot: a sanitizing access whose result a later access used unguarded
	insns   asm.Instructions
	start   []int // by instruction: its first slot
	from    []int // by slot: the instruction that first reached it (-1: entry); a tree, so acyclic
	cur     int   // the instruction being stepped
	slab    []State
	spare   []*State // pending states' memory, for reuse
	states  int      // kept states made
	pending int      // states passed on, not yet stepped
	peak    int      // the most of states + pending
	// tooComplex: a kept state was needed past Config.MaxStates.
	tooComplex bool
}

// workItem is an instruction to step: with its own state (a slot that is
// not kept), or nil for the stored one.
type workItem struct {
	pc int
	s  *State
}

// newState is memory for a state: spare, or from a slab (one allocation per
// many states).
func (a *analysis) newState() *State {
	if n := len(a.spare); n > 0 {
		s := a.spare[n-1]
		a.spare = a.spare[:n-1]
		return s
	}
	if len(a.slab) == 0 {
		a.slab = make([]State, min(256, len(a.slots)))
	}
	s := &a.slab[0]
	a.slab = a.slab[1:]
	return s
}

// markKept decides which slots keep a state.
func (a *analysis) markKept() {
	preds := make([]uint8, len(a.slots))
	for _, succ := range a.g.Succ {
		for _, t := range succ {
			preds[t] = min(preds[t]+1, 2)
		}
	}
	a.keep = make([]bool, len(a.slots))
	for pc, n := range preds {
		a.keep[pc] = n >= 2 || a.keepAll
	}
	for _, pcs := range [][]int{a.g.Subprogs, a.g.BackEdges, a.g.HelperCalls, a.g.callSites()} {
		for _, pc := range pcs {
			a.keep[pc] = true
		}
	}
}

func (a *analysis) run() (*Result, error) {
	n := len(a.slots)
	a.markKept()
	a.in = make([]*State, n)
	a.reached = make([]bool, n)
	a.access = make([]Access, n)
	a.queued = make([]bool, n)
	a.useful = make([]bool, n)
	a.from = make([]int, n)
	a.cur = -1
	main := entry(true, a.cfg.CtxSize)
	if a.cfg.EntryArg && a.cfg.CtxSize >= 8 {
		main.Regs[abi.RegArg] = heapPointer(false, 0)
	}
	a.flow(0, &main)
	processed := 0
	for len(a.work) > 0 {
		w := a.work[len(a.work)-1]
		a.work = a.work[:len(a.work)-1]
		pc := w.pc
		processed++
		if processed > a.cfg.MaxInsns {
			return nil, reject(pc, "program too complex: %d instructions processed", processed)
		}
		st := w.s // a state of its own: stepped on in place, then spare
		if st == nil {
			a.queued[pc] = false
			kept := *a.in[pc]
			st = &kept
		}
		a.cur = pc
		err := a.step(pc, st)
		if w.s != nil {
			a.spare = append(a.spare, w.s)
			a.pending--
		}
		if err == nil && a.tooComplex {
			err = reject(pc, "program too complex: more than %d states", a.cfg.MaxStates)
		}
		if err != nil {
			if e, ok := err.(*Error); ok {
				return nil, &Error{Insn: e.Insn, Reason: e.Reason, Log: a.pathLog(pc, st)}
			}
			return nil, err
		}
	}
	// A program must be able to end: from every instruction the analysis
	// reached, some path along the graph must lead to an exit of its frame.
	// One with none is in an endless loop no run leaves but by
	// cancellation. A loop with a conditional way out (or a may_goto) is
	// accepted, though the analysis may know the way out is never taken:
	// the engines stop it at its back-edge when the runtime cancels it.
	exits := a.g.exitReachable()
	for pc, reached := range a.reached {
		if reached && !exits[pc] {
			return nil, &Error{Insn: pc, Reason: "no exit is reachable from here (an endless loop)", Log: a.pathLog(pc, a.in[pc])}
		}
	}
	r := &Result{CFG: a.g, Access: a.access, InsnsProcessed: processed, States: a.states, PeakStates: a.peak}
	for pc, acc := range a.access {
		// Sanitizing in place costs more than a plain guard on a
		// pointer-chasing path; do it only where a later access profits.
		if acc == HeapSanitize && !a.useful[pc] {
			acc, a.access[pc] = HeapAccess, HeapAccess
		}
		if acc != NoAccess {
			r.GuardsTotal++
			if acc != HeapAccess && acc != HeapSanitize {
				r.GuardsElided++
			}
		}
	}
	r.CancelPoints = append(append([]int{}, a.g.BackEdges...), a.g.HelperCalls...)
	sortInts(r.CancelPoints)
	r.CancelTable = a.table(r.CancelPoints, false)
	r.CallTable = a.table(a.g.callSites(), true)
	if err := a.releasable(r); err != nil {
		return nil, err
	}
	return r, nil
}

// flow passes s to pc: stepped on as it is, where pc keeps no state;
// otherwise merged into pc's state, and pc queued if that changed.
func (a *analysis) flow(pc int, s *State) {
	if !a.reached[pc] {
		a.reached[pc] = true
		a.from[pc] = a.cur
	}
	if !a.keep[pc] {
		c := a.newState()
		*c = *s
		a.work = append(a.work, workItem{pc: pc, s: c})
		a.pending++
		a.peak = max(a.peak, a.states+a.pending)
		return
	}
	if a.in[pc] == nil {
		if a.states >= a.cfg.MaxStates {
			a.tooComplex = true
			return
		}
		a.states++
		a.peak = max(a.peak, a.states+a.pending)
		a.in[pc] = a.newState()
		*a.in[pc] = *s
	} else if !a.in[pc].joinInto(s, a.useful) {
		return
	}
	if !a.queued[pc] {
		a.queued[pc] = true
		a.work = append(a.work, workItem{pc: pc})
	}
}

// pathLogLines is how far back a rejection's log follows the path.
const pathLogLines = 24

// pathLog is the log of a rejection at pc, where the state was st: the
// instructions of the path by which the analysis first reached pc (its last
// pathLogLines), as the kernel's log shows the failing path, with the
// registers before each where the analysis keeps them (joined over all
// paths) and before pc itself (st; nil for the state kept there, if any);
// the last line is pc.
func (a *analysis) pathLog(pc int, st *State) []string {
	var path []int
	for p := pc; p >= 0 && len(path) < pathLogLines; p = a.from[p] {
		path = append(path, p)
	}
	slices.Reverse(path)
	log := make([]string, 0, len(path))
	helper := func(id int32) string { return a.cfg.Helpers[id].Name }
	for _, p := range path {
		s := a.slots[p]
		line := bytecode.KernelLine(p, s, helper)
		regs := a.in[p]
		if p == pc && st != nil {
			regs = st
		}
		if regs != nil {
			line += " ; " + regsLog(regs)
		}
		log = append(log, line)
	}
	return log
}

func regsLog(s *State) string {
	var b strings.Builder
	for i, r := range s.Regs {
		if r.Kind != NotInit {
			fmt.Fprintf(&b, "R%d=%v ", i, r)
		}
	}
	return strings.TrimSpace(b.String())
}

func (a *analysis) read(pc int, s *State, r uint8) (Reg, error) {
	if s.Regs[r].Kind == NotInit {
		return Reg{}, reject(pc, "R%d !read_ok", r)
	}
	return s.Regs[r], nil
}

// note records how instruction pc reaches memory; paths that disagree make it
// a guarded heap access.
//
// A sanitizing access is idempotent on pointers already in the sandbox's view
// (the stack, the context, a checked pointer), so where paths disagree the
// access sanitizes.
func (a *analysis) note(pc int, acc Access) {
	switch prev := a.access[pc]; {
	case prev == NoAccess:
		a.access[pc] = acc
	case prev != acc:
		a.access[pc] = HeapSanitize
	}
}

// symbol is the name of the instruction at slot pc, if it has one.
func (a *analysis) symbol(pc int) string {
	if i, ok := slices.BinarySearch(a.start, pc); ok {
		return a.insns[i].Symbol()
	}
	return ""
}
