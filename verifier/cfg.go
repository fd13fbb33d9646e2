package verifier

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
)

// ErrRejected is wrapped by every *Error: the program does not verify.
var ErrRejected = errors.New("program rejected")

// Error is a rejection: the instruction (first slot), the reason, and the
// abstract registers at that instruction, when the analysis got that far.
type Error struct {
	Insn   int
	Reason string
	Log    []string
}

func (e *Error) Error() string { return fmt.Sprintf("insn %d: %s", e.Insn, e.Reason) }
func (e *Error) Unwrap() error { return ErrRejected }

func reject(insn int, format string, args ...any) error {
	return &Error{Insn: insn, Reason: fmt.Sprintf(format, args...)}
}

// CFG is a program's control-flow graph, by slot (an lddw's second slot has
// none of its own).
type CFG struct {
	// Succ lists the slots control can go to after each instruction: the next
	// one, a jump's target, a local call's return point (the callee is a
	// subprogram of its own, entered through Calls).
	Succ [][]int
	// Subprogs are the slots where subprograms start, the main program first.
	Subprogs []int
	// Calls maps a local call's slot to the subprogram it enters.
	Calls map[int]int
	// BackEdges are jumps to an earlier slot: every loop has one. With helper
	// calls they are the cancellation points.
	BackEdges []int
	// HelperCalls are the slots of calls to helpers.
	HelperCalls []int
}

// BuildCFG validates insns and builds their graph (buildCFG).
func BuildCFG(insns asm.Instructions) (*CFG, error) {
	p, err := bytecode.NewProgram(insns)
	if err != nil {
		return nil, rejection(err)
	}
	return buildCFG(p)
}

// rejection is a validation error as the verifier reports it: an *Error.
func rejection(err error) error {
	var be *bytecode.Error
	if errors.As(err, &be) {
		return reject(be.Insn, "%s", be.Reason)
	}
	return err
}

// buildCFG builds the graph of a validated program and rejects what no path
// analysis should see: code no path reaches, jumps from one subprogram into
// another.
func buildCFG(p *bytecode.Program) (*CFG, error) {
	insns, start, total := p.Instructions(), p.Starts(), p.Len()
	g := &CFG{Succ: make([][]int, total), Subprogs: []int{0}, Calls: map[int]int{}}
	isSub := map[int]bool{0: true}
	for i, ins := range insns {
		slot := start[i]
		if ins.OpCode.JumpOp() == asm.Call && ins.Src == bytecode.CallLocal {
			t, _ := bytecode.Target(ins, slot)
			g.Calls[slot] = t
			if !isSub[t] {
				isSub[t] = true
				g.Subprogs = append(g.Subprogs, t)
			}
		}
	}
	sortInts(g.Subprogs)
	subOf := func(slot int) int { // the subprogram a slot belongs to
		s := 0
		for _, b := range g.Subprogs {
			if b <= slot {
				s = b
			}
		}
		return s
	}
	for i, ins := range insns {
		slot := start[i]
		next := slot + int(ins.Width())
		op := ins.OpCode
		switch {
		case op.JumpOp() == asm.Exit:
		case op.JumpOp() == asm.Call:
			// callx (the helper's number in a register) is a helper call
			// too; the analysis finds which helpers it may call.
			if ins.Src == bytecode.CallHelper || op.Source() == asm.RegSource {
				g.HelperCalls = append(g.HelperCalls, slot)
			}
			g.Succ[slot] = []int{next}
		case op.Class().IsJump():
			t, _ := bytecode.Target(ins, slot)
			if subOf(t) != subOf(slot) {
				return nil, reject(slot, "jump to %d leaves the subprogram starting at %d", t, subOf(slot))
			}
			if t <= slot {
				g.BackEdges = append(g.BackEdges, slot)
			}
			if op.JumpOp() == asm.Ja {
				g.Succ[slot] = []int{t}
			} else {
				g.Succ[slot] = []int{next, t}
			}
		default:
			if isSub[next] {
				return nil, reject(slot, "falls through into the subprogram starting at %d", next)
			}
			g.Succ[slot] = []int{next}
		}
	}
	// Every instruction must be reachable from its subprogram's entry.
	seen := make([]bool, total)
	var stack []int
	for _, s := range g.Subprogs {
		stack = append(stack, s)
		seen[s] = true
	}
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, n := range g.Succ[s] {
			if !seen[n] {
				seen[n] = true
				stack = append(stack, n)
			}
		}
	}
	for _, s := range start {
		if !seen[s] {
			return nil, reject(s, "unreachable instruction")
		}
	}
	return g, nil
}

func sortInts(s []int) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
