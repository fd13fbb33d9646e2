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

// ErrRejected is wrapped by every *Error: the program does not verify.
var ErrRejected = errors.New("program rejected")

// Error is a rejection: the instruction (first slot), the reason, and the
// abstract registers at that instruction, when the analysis got that far.
type Error struct {
	Insn   int
	Reason string
	Log    []string
	// Invalid is bytecode's error when the program is not valid bytecode
	// (bytecode.NewProgram refused it): nothing was analysed.
	Invalid *bytecode.Error
}

func (e *Error) Error() string { return fmt.Sprintf("insn %d: %s", e.Insn, e.Reason) }

// Unwrap gives ErrRejected and, for a program that is not valid bytecode,
// bytecode's error.
func (e *Error) Unwrap() []error {
	if e.Invalid != nil {
		return []error{ErrRejected, e.Invalid}
	}
	return []error{ErrRejected}
}

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
	// Exits are the slots of exit instructions.
	Exits []int
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
		return &Error{Insn: be.Insn, Reason: be.Reason, Invalid: be}
	}
	return err
}

// buildCFG builds the graph of a validated program and rejects what no path
// analysis should see: code no path reaches, jumps from one subprogram into
// another, recursion and call chains deeper than abi.MaxFrames (checkCalls).
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
			g.Exits = append(g.Exits, slot)
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
	seen := reachable(g.Subprogs, total, func(s int) []int { return g.Succ[s] })
	for _, s := range start {
		if !seen[s] {
			return nil, reject(s, "unreachable instruction")
		}
	}
	name := func(sub int) string { // a subprogram's name in a call chain
		if i, ok := slices.BinarySearch(start, sub); ok && insns[i].Symbol() != "" {
			return insns[i].Symbol()
		}
		if sub == 0 {
			return "main"
		}
		return fmt.Sprintf("subprog@%d", sub)
	}
	if err := g.checkCalls(name); err != nil {
		return nil, err
	}
	return g, nil
}

// checkCalls rejects recursion, direct or mutual, and call chains of more
// than abi.MaxFrames frames (the main program's and one per nested call: the
// engines have that many stack frames), naming the call that closes the
// cycle or enters the frame too many, and the chain of subprograms it
// ends (name gives each one's name). The kernel's check_max_stack_depth
// refuses both too, walking the call graph the same way; its other rule, at
// most 512 bytes of stack for a whole chain, has no counterpart here: every
// frame has abi.StackSize bytes of its own.
//
// The walk is depth first from each subprogram in order, the main program
// first, following calls in order; a subprogram whose walk is done keeps the
// frames of its deepest chain (depth) and the call that starts it (deepest),
// so each is walked once and a chain too deep through it is still found.
func (g *CFG) checkCalls(name func(sub int) string) error {
	n := len(g.Subprogs)
	index := make(map[int]int, n) // a subprogram's entry slot: its index
	for i, s := range g.Subprogs {
		index[s] = i
	}
	calls := make([][]int, n) // each subprogram's call slots, in order
	for slot := range g.Calls {
		i, _ := slices.BinarySearch(g.Subprogs, slot+1)
		calls[i-1] = append(calls[i-1], slot)
	}
	for _, c := range calls {
		slices.Sort(c)
	}
	const (
		unseen = iota
		walking
		done
	)
	state := make([]uint8, n)
	depth := make([]int, n)   // done: frames of its deepest chain, its own included
	deepest := make([]int, n) // done: the call its deepest chain starts with (-1: none)
	for i := range deepest {
		deepest[i] = -1
	}
	var chain, via []int // the walk's subprograms, and the call that entered each
	chainText := func(subs []int) string {
		names := make([]string, len(subs))
		for k, s := range subs {
			names[k] = name(g.Subprogs[s])
		}
		return strings.Join(names, " → ")
	}
	// tooDeep rejects a chain of more than abi.MaxFrames frames: the walk's,
	// then j's deepest from the call c that enters j.
	tooDeep := func(c, j int) error {
		subs, entered := append(slices.Clone(chain), j), append(slices.Clone(via), c)
		for k := j; deepest[k] >= 0 && len(subs) <= abi.MaxFrames; {
			c := deepest[k]
			k = index[g.Calls[c]]
			subs, entered = append(subs, k), append(entered, c)
		}
		return reject(entered[abi.MaxFrames], "call depth %d exceeds %d frames: %s",
			abi.MaxFrames+1, abi.MaxFrames, chainText(subs[:abi.MaxFrames+1]))
	}
	var walk func(i int) error
	walk = func(i int) error {
		state[i] = walking
		chain = append(chain, i)
		depth[i] = 1
		for _, c := range calls[i] {
			j := index[g.Calls[c]]
			switch {
			case state[j] == walking:
				return reject(c, "call chain %s is recursive", chainText(append(slices.Clone(chain), j)))
			case state[j] == done && len(chain)+depth[j] > abi.MaxFrames:
				return tooDeep(c, j)
			case state[j] == unseen:
				if len(chain) == abi.MaxFrames {
					return tooDeep(c, j)
				}
				via = append(via, c)
				if err := walk(j); err != nil {
					return err
				}
				via = via[:len(via)-1]
			}
			if 1+depth[j] > depth[i] {
				depth[i], deepest[i] = 1+depth[j], c
			}
		}
		state[i] = done
		chain = chain[:len(chain)-1]
		return nil
	}
	for i := range n {
		if state[i] == unseen {
			via = append(via[:0], -1)
			if err := walk(i); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortInts(s []int) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// exitReachable marks the slots from which an exit of their subprogram can be
// reached along the graph's edges: the exits, and backwards from them. A
// local call's edge is to its return point (a callee that never returns is
// found in the callee), a helper call's too; a may_goto has two edges, so a
// loop that tests one has a way out.
func (g *CFG) exitReachable() []bool {
	// The predecessors, all in one slice: slot t's are preds[first[t]:first[t+1]].
	n := len(g.Succ)
	first := make([]int, n+1)
	for _, succ := range g.Succ {
		for _, t := range succ {
			first[t+1]++
		}
	}
	for t := range n {
		first[t+1] += first[t]
	}
	preds, fill := make([]int, first[n]), slices.Clone(first[:n])
	for s, succ := range g.Succ {
		for _, t := range succ {
			preds[fill[t]] = s
			fill[t]++
		}
	}
	return reachable(g.Exits, n, func(t int) []int { return preds[first[t]:first[t+1]] })
}

// reachable marks the slots, of n, reached from the slots from along the
// edges that edges gives each slot.
func reachable(from []int, n int, edges func(int) []int) []bool {
	seen := make([]bool, n)
	stack := slices.Clone(from)
	for _, s := range stack {
		seen[s] = true
	}
	for len(stack) > 0 {
		s := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, t := range edges(s) {
			if !seen[t] {
				seen[t] = true
				stack = append(stack, t)
			}
		}
	}
	return seen
}
