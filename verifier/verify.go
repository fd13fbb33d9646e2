package verifier

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"

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
	CFG            *CFG
	Access         []Access // per slot, for memory instructions
	InsnsProcessed int      // instruction visits until the fixpoint
	States         int      // instructions with a stored state
	GuardsTotal    int      // memory instructions
	GuardsElided   int      // of which provably in bounds
	CancelPoints   []int    // back-edges and helper calls, by slot
	// CancelTable: what is held at each cancellation point, in
	// CancelPoints' order, for the runtime to release when it stops the
	// program there.
	CancelTable []CancelPoint
}

// CancelPoint is what a program holds at one cancellation point.
type CancelPoint struct {
	Slot  int
	Locks int // taken through Config.LockFunc and not released yet, in this frame
}

// Verify checks insns for cfg and returns its analysis, or an *Error naming the
// first instruction found at fault, with the abstract registers there in its
// Log.
func Verify(insns asm.Instructions, cfg Config) (*Result, error) {
	a, err := newAnalysis(insns, cfg)
	if err != nil {
		return nil, err
	}
	return a.run()
}

func newAnalysis(insns asm.Instructions, cfg Config) (*analysis, error) {
	g, err := BuildCFG(insns)
	if err != nil {
		return nil, err
	}
	raw, err := bytecode.Encode(insns)
	if err != nil {
		return nil, err
	}
	start, _ := bytecode.Slots(insns)
	a := &analysis{cfg: cfg, g: g, slots: bytecode.DecodeSlots(raw), insns: insns, start: start}
	if a.cfg.MaxInsns == 0 {
		a.cfg.MaxInsns = 1_000_000
	}
	return a, nil
}

type analysis struct {
	cfg    Config
	g      *CFG
	slots  []bytecode.Slot
	in     []*State // state at each slot's entry (nil: not reached yet)
	access []Access
	work   []int
	queued []bool
	useful []bool // by slot: a sanitizing access whose result a later access used unguarded
	insns  asm.Instructions
	start  []int // by instruction: its first slot
	from   []int // by slot: the instruction that first reached it (-1: entry); a tree, so acyclic
	cur    int   // the instruction being stepped
	slab   []State
}

func (a *analysis) run() (*Result, error) {
	n := len(a.slots)
	a.in = make([]*State, n)
	a.access = make([]Access, n)
	a.queued = make([]bool, n)
	a.useful = make([]bool, n)
	a.from = make([]int, n)
	a.cur = -1
	main := entry(true, a.cfg.CtxSize)
	if a.cfg.EntryArg && a.cfg.CtxSize >= 8 {
		main.Regs[3] = heapPointer(false, 0)
	}
	a.flow(0, &main)
	processed := 0
	for len(a.work) > 0 {
		pc := a.work[len(a.work)-1]
		a.work = a.work[:len(a.work)-1]
		a.queued[pc] = false
		processed++
		if processed > a.cfg.MaxInsns {
			return nil, reject(pc, "program too complex: %d instructions processed", processed)
		}
		st := *a.in[pc]
		a.cur = pc
		if err := a.step(pc, &st); err != nil {
			if e, ok := err.(*Error); ok {
				return nil, &Error{Insn: e.Insn, Reason: e.Reason, Log: a.pathLog(pc)}
			}
			return nil, err
		}
	}
	// Sanitizing in place costs more than a plain guard on a pointer-chasing
	// path; do it only where a later access profits.
	for pc, acc := range a.access {
		if acc == HeapSanitize && !a.useful[pc] {
			a.access[pc] = HeapAccess
		}
	}
	r := &Result{CFG: a.g, Access: a.access, InsnsProcessed: processed}
	for pc, s := range a.in {
		if s != nil {
			r.States++
		}
		if a.access[pc] != NoAccess {
			r.GuardsTotal++
			if a.access[pc] != HeapAccess && a.access[pc] != HeapSanitize {
				r.GuardsElided++
			}
		}
	}
	r.CancelPoints = append(append([]int{}, a.g.BackEdges...), a.g.HelperCalls...)
	sortInts(r.CancelPoints)
	for _, pc := range r.CancelPoints {
		if s := a.in[pc]; s != nil {
			r.CancelTable = append(r.CancelTable, CancelPoint{Slot: pc, Locks: int(s.Locks)})
		}
	}
	return r, nil
}

// flow merges s into the state at pc and queues pc if it changed.
func (a *analysis) flow(pc int, s *State) {
	if a.in[pc] == nil {
		// States come from slabs: one allocation per many instructions.
		if len(a.slab) == 0 {
			a.slab = make([]State, min(256, len(a.slots)))
		}
		a.in[pc], a.slab = &a.slab[0], a.slab[1:]
		*a.in[pc] = *s
		a.from[pc] = a.cur
	} else if !a.in[pc].joinInto(s, a.useful) {
		return
	}
	if !a.queued[pc] {
		a.queued[pc] = true
		a.work = append(a.work, pc)
	}
}

// pathLogLines is how far back a rejection's log follows the path.
const pathLogLines = 24

// pathLog is the log of a rejection at pc: the instructions of the path by
// which the analysis first reached pc (its last pathLogLines), each with the
// registers before it over all paths, as the kernel's log shows the failing
// path; the last line is pc itself.
func (a *analysis) pathLog(pc int) []string {
	var path []int
	for p := pc; p >= 0 && len(path) < pathLogLines; p = a.from[p] {
		path = append(path, p)
	}
	slices.Reverse(path)
	log := make([]string, 0, len(path))
	helper := func(id int32) string { return a.cfg.Helpers[id].Name }
	for _, p := range path {
		s := a.slots[p]
		log = append(log, fmt.Sprintf("%d: (%02x) %s ; %s", p, s.Op, bytecode.KernelText(s, helper), regsLog(a.in[p])))
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
