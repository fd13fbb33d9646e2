package bytecode

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"
)

// Assemble turns the text form of kflex's ISA tests into instructions. It is the
// syntax of the public bpf_conformance suite: one instruction per line, '#' or
// '//' comments, "label:" lines, registers as %rN or rN, memory as [%rN+off].
//
//	mov %r0, 1          add32 %r0, %r1       neg %r2           be16 %r0   bswap64 %r0 (or swap64)
//	lddw %r1, 0x1122334455667788                movsx832 %r0, %r1
//	ldxw %r0, [%r1+4]   ldxhsx %r0, [%r1]    stdw [%r10-8], 5   stxb [%r1+2], %r3
//	lock fetch add32 [%r10-4], %r1           lock cmpxchg [%r1], %r2
//	jeq %r1, 5, label   jslt32 %r1, %r2, +3  ja -2    ja32 label  may_goto +1
//	call 5    call local fn    call %r2    call runtime 7    exit
//	addr_space_cast %r1, %r2, 1   (imm 1: to the executor's view; 65536: to the canonical/user view)
//
// A jump to the label "exit", where no such label is defined, goes to the first
// exit instruction.
func Assemble(src string) (asm.Instructions, error) {
	var insns asm.Instructions
	type fixup struct {
		insn  int
		label string
		line  int
	}
	var fixups []fixup
	labels := map[string]int{} // label -> instruction index
	firstExit := -1
	for n, line := range strings.Split(src, "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if name, ok := strings.CutSuffix(line, ":"); ok && !strings.ContainsAny(name, " \t") {
			if _, dup := labels[name]; dup {
				return nil, fmt.Errorf("line %d: label %q defined twice", n+1, name)
			}
			labels[name] = len(insns)
			continue
		}
		fields := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
		ins, label, err := assembleLine(fields)
		if err != nil {
			return nil, fmt.Errorf("line %d: %q: %w", n+1, line, err)
		}
		if label != "" {
			fixups = append(fixups, fixup{len(insns), label, n + 1})
		}
		if firstExit < 0 && ins.OpCode.JumpOp() == asm.Exit {
			firstExit = len(insns)
		}
		insns = append(insns, ins)
	}
	start, total := Slots(insns)
	start = append(start, total) // a label after the last instruction
	for _, f := range fixups {
		at, ok := labels[f.label]
		if !ok && f.label == "exit" && firstExit >= 0 {
			// As in bpf_conformance's files: "exit" names the first exit.
			at, ok = firstExit, true
		}
		if !ok {
			return nil, fmt.Errorf("line %d: undefined label %q", f.line, f.label)
		}
		rel := start[at] - start[f.insn] - 1
		ins := &insns[f.insn]
		if ins.OpCode.JumpOp() == asm.Call && insns[at].Symbol() == "" {
			// A subprogram keeps its label as its name, as an ELF
			// object's functions do (the verifier knows some by name).
			insns[at] = insns[at].WithSymbol(f.label)
		}
		if ins.OpCode.JumpOp() == asm.Call || ins.OpCode == ja32Op {
			ins.Constant = int64(rel)
		} else {
			if rel != int(int16(rel)) {
				return nil, fmt.Errorf("line %d: jump to %q out of 16-bit range", f.line, f.label)
			}
			ins.Offset = int16(rel)
		}
	}
	return insns, nil
}

var aluOps = map[string]asm.ALUOp{
	"add": asm.Add, "sub": asm.Sub, "mul": asm.Mul, "div": asm.Div, "sdiv": asm.SDiv,
	"or": asm.Or, "and": asm.And, "lsh": asm.LSh, "rsh": asm.RSh, "mod": asm.Mod,
	"smod": asm.SMod, "xor": asm.Xor, "mov": asm.Mov, "arsh": asm.ArSh,
}

var jumpOps = map[string]asm.JumpOp{
	"jeq": asm.JEq, "jgt": asm.JGT, "jge": asm.JGE, "jset": asm.JSet, "jne": asm.JNE,
	"jsgt": asm.JSGT, "jsge": asm.JSGE, "jlt": asm.JLT, "jle": asm.JLE, "jslt": asm.JSLT, "jsle": asm.JSLE,
}

var sizes = map[string]asm.Size{"b": asm.Byte, "h": asm.Half, "w": asm.Word, "dw": asm.DWord}

var atomicOps = map[string]uint32{
	"add": AtomicAdd, "or": AtomicOr, "and": AtomicAnd, "xor": AtomicXor,
	"xchg": AtomicXchg, "cmpxchg": AtomicCmpXchg,
}

func assembleLine(f []string) (ins asm.Instruction, label string, err error) {
	m, ops := f[0], f[1:]
	want := func(n int) error {
		if len(ops) != n {
			return fmt.Errorf("%s takes %d operand(s), got %d", m, n, len(ops))
		}
		return nil
	}
	cls := asm.ALU64Class
	base := m
	if b, ok := strings.CutSuffix(m, "32"); ok && !strings.HasPrefix(m, "movsx") && !strings.HasPrefix(m, "be") &&
		!strings.HasPrefix(m, "le") && !strings.HasPrefix(m, "swap") && !strings.HasPrefix(m, "bswap") {
		base, cls = b, asm.ALUClass
	}
	switch {
	case m == "exit":
		return asm.Return(), "", want(0)
	case m == "lddw":
		if err := want(2); err != nil {
			return ins, "", err
		}
		dst, err := register(ops[0])
		if err != nil {
			return ins, "", err
		}
		v, err := immediate(ops[1], 64)
		return asm.LoadImm(dst, v, asm.DWord), "", err
	case m == "call":
		return assembleCall(ops)
	case m == "ja" || m == "ja32" || m == "may_goto":
		if err := want(1); err != nil {
			return ins, "", err
		}
		ins.OpCode = asm.Ja.Op(asm.ImmSource)
		if m == "ja32" {
			ins.OpCode = ja32Op
		} else if m == "may_goto" {
			ins.OpCode = asm.JCOND.Op(asm.ImmSource)
		}
		label, err = target(ops[0], &ins, m == "ja32")
		return ins, label, err
	case m == "lock":
		return assembleAtomic(ops)
	case m == "addr_space_cast":
		if err := want(3); err != nil {
			return ins, "", err
		}
		ins = asm.Instruction{OpCode: asm.Mov.Op(asm.RegSource), Offset: 1}
		if ins.Dst, err = register(ops[0]); err != nil {
			return ins, "", err
		}
		if ins.Src, err = register(ops[1]); err != nil {
			return ins, "", err
		}
		if ins.Constant, err = immediate(ops[2], 32); err == nil && ins.Constant != 1 && ins.Constant != 1<<16 {
			err = fmt.Errorf("address space cast %d: want 1 (to the executor's view) or 65536 (to the user view)", ins.Constant)
		}
		return ins, "", err
	case strings.HasPrefix(m, "movsx"):
		// movsx<from><to>: movsx832, movsx864, movsx1632, movsx1664, movsx3264
		variants := map[string]struct {
			op  asm.ALUOp
			cls asm.Class
		}{
			"movsx832": {asm.MovSX8, asm.ALUClass}, "movsx864": {asm.MovSX8, asm.ALU64Class},
			"movsx1632": {asm.MovSX16, asm.ALUClass}, "movsx1664": {asm.MovSX16, asm.ALU64Class},
			"movsx3264": {asm.MovSX32, asm.ALU64Class},
		}
		v, ok := variants[m]
		if !ok {
			return ins, "", fmt.Errorf("unknown mnemonic %q", m)
		}
		return aluRegImm(asm.OpCode(v.cls).SetALUOp(v.op), ops, want)
	case strings.HasPrefix(m, "be") || strings.HasPrefix(m, "le") || strings.HasPrefix(m, "swap") || strings.HasPrefix(m, "bswap"):
		if err := want(1); err != nil {
			return ins, "", err
		}
		width, err := strconv.Atoi(strings.TrimLeft(m, "bleswap"))
		if err != nil {
			return ins, "", fmt.Errorf("unknown mnemonic %q", m)
		}
		dst, err := register(ops[0])
		switch {
		case strings.HasPrefix(m, "be"):
			ins = asm.HostTo(asm.BE, dst, sizeOfWidth(width))
		case strings.HasPrefix(m, "le"):
			ins = asm.HostTo(asm.LE, dst, sizeOfWidth(width))
		default:
			ins = asm.Instruction{OpCode: asm.OpCode(asm.ALU64Class).SetALUOp(asm.Swap), Dst: dst}
		}
		ins.Constant = int64(width)
		return ins, "", err
	case base == "neg":
		if err := want(1); err != nil {
			return ins, "", err
		}
		dst, err := register(ops[0])
		return asm.Instruction{OpCode: asm.OpCode(cls).SetALUOp(asm.Neg), Dst: dst}, "", err
	}
	if op, ok := aluOps[base]; ok {
		return aluRegImm(asm.OpCode(cls).SetALUOp(op), ops, want)
	}
	jbase, jcls := m, asm.JumpClass
	if b, ok := strings.CutSuffix(m, "32"); ok {
		jbase, jcls = b, asm.Jump32Class
	}
	if op, ok := jumpOps[jbase]; ok {
		if err := want(3); err != nil {
			return ins, "", err
		}
		if ins.Dst, err = register(ops[0]); err != nil {
			return ins, "", err
		}
		ins.OpCode = asm.OpCode(jcls).SetJumpOp(op)
		if err = regOrImm(&ins, ops[1]); err != nil {
			return ins, "", err
		}
		label, err = target(ops[2], &ins, false)
		return ins, label, err
	}
	return assembleMemory(m, ops, want)
}

func sizeOfWidth(w int) asm.Size {
	return map[int]asm.Size{16: asm.Half, 32: asm.Word, 64: asm.DWord}[w]
}

func aluRegImm(op asm.OpCode, ops []string, want func(int) error) (asm.Instruction, string, error) {
	ins := asm.Instruction{OpCode: op}
	if err := want(2); err != nil {
		return ins, "", err
	}
	var err error
	if ins.Dst, err = register(ops[0]); err != nil {
		return ins, "", err
	}
	return ins, "", regOrImm(&ins, ops[1])
}

// regOrImm sets the source of an ALU or jump instruction. A 32-bit ALU
// operation uses the low half of its operand, so it takes any 64-bit
// immediate and keeps the low half, as bpf_conformance's assembler does
// (its lock_cmpxchg32 test writes mov32 r1, 0x876543210).
func regOrImm(ins *asm.Instruction, s string) error {
	if r, err := register(s); err == nil {
		ins.OpCode = ins.OpCode.SetSource(asm.RegSource)
		ins.Src = r
		return nil
	}
	if ins.OpCode.Class() == asm.ALUClass {
		v, err := immediate(s, 64)
		ins.Constant = int64(int32(v))
		return err
	}
	v, err := immediate(s, 32)
	ins.Constant = v
	return err
}

func assembleCall(ops []string) (asm.Instruction, string, error) {
	ins := asm.Instruction{OpCode: asm.Call.Op(asm.ImmSource)}
	mode, arg := "helper", ""
	switch len(ops) {
	case 1:
		arg = ops[0]
	case 2:
		mode, arg = ops[0], ops[1]
	default:
		return ins, "", fmt.Errorf("call takes 1 or 2 operands")
	}
	switch mode {
	case "helper":
		if r, err := register(arg); err == nil {
			ins.OpCode = asm.Call.Op(asm.RegSource)
			ins.Dst = r
			return ins, "", nil
		}
		v, err := immediate(arg, 32)
		ins.Constant = v
		return ins, "", err
	case "local":
		ins.Src = CallLocal
		label, err := target(arg, &ins, true)
		return ins, label, err
	case "runtime":
		ins.Src = CallKfunc
		v, err := immediate(arg, 32)
		ins.Constant = v
		return ins, "", err
	}
	return ins, "", fmt.Errorf("unknown call mode %q", mode)
}

func assembleAtomic(ops []string) (asm.Instruction, string, error) {
	ins := asm.Instruction{}
	fetch := false
	if len(ops) > 0 && ops[0] == "fetch" {
		fetch, ops = true, ops[1:]
	}
	if len(ops) != 3 {
		return ins, "", fmt.Errorf("lock takes [fetch] OP [DST+OFF], SRC")
	}
	name, size := ops[0], asm.DWord
	if b, ok := strings.CutSuffix(name, "32"); ok {
		name, size = b, asm.Word
	}
	a, ok := atomicOps[name]
	if !ok {
		return ins, "", fmt.Errorf("unknown atomic operation %q", ops[0])
	}
	if fetch {
		a |= AtomicFetch
	}
	var err error
	if ins.Dst, ins.Offset, err = memOperand(ops[1]); err != nil {
		return ins, "", err
	}
	if ins.Src, err = register(ops[2]); err != nil {
		return ins, "", err
	}
	ins.OpCode = asm.OpCode(asm.StXClass).SetMode(asm.AtomicMode).SetSize(size) | asm.OpCode(a<<8)
	return ins, "", nil
}

// assembleMemory handles ldx*, st*, stx*, ldacq*, strel*.
func assembleMemory(m string, ops []string, want func(int) error) (asm.Instruction, string, error) {
	var ins asm.Instruction
	var prefix string
	for _, p := range []string{"ldacq", "strel", "ldx", "stx", "st"} {
		if strings.HasPrefix(m, p) {
			prefix = p
			break
		}
	}
	rest := strings.TrimPrefix(m, prefix)
	sx := false
	if prefix == "ldx" {
		rest, sx = strings.CutSuffix(rest, "sx")
	}
	size, ok := sizes[rest]
	if prefix == "" || !ok {
		return ins, "", fmt.Errorf("unknown mnemonic %q", m)
	}
	if err := want(2); err != nil {
		return ins, "", err
	}
	var err error
	switch prefix {
	case "ldx", "ldacq":
		if ins.Dst, err = register(ops[0]); err != nil {
			return ins, "", err
		}
		if ins.Src, ins.Offset, err = memOperand(ops[1]); err != nil {
			return ins, "", err
		}
		ins.OpCode = asm.LoadMemOp(size)
		if sx {
			ins.OpCode = asm.LoadMemSXOp(size)
		}
		if prefix == "ldacq" {
			ins.OpCode = asm.OpCode(asm.StXClass).SetMode(asm.AtomicMode).SetSize(size) | LoadAcquire<<8
		}
	case "st":
		if ins.Dst, ins.Offset, err = memOperand(ops[0]); err != nil {
			return ins, "", err
		}
		ins.OpCode = asm.StoreImmOp(size)
		ins.Constant, err = immediate(ops[1], 32)
	case "stx", "strel":
		if ins.Dst, ins.Offset, err = memOperand(ops[0]); err != nil {
			return ins, "", err
		}
		ins.Src, err = register(ops[1])
		ins.OpCode = asm.StoreMemOp(size)
		if prefix == "strel" {
			ins.OpCode = asm.OpCode(asm.StXClass).SetMode(asm.AtomicMode).SetSize(size) | StoreRelease<<8
		}
	}
	return ins, "", err
}

func register(s string) (asm.Register, error) {
	n, ok := strings.CutPrefix(strings.TrimPrefix(s, "%"), "r")
	if !ok {
		return 0, fmt.Errorf("bad register %q", s)
	}
	v, err := strconv.ParseUint(n, 10, 8)
	if err != nil || v > 15 {
		return 0, fmt.Errorf("bad register %q", s)
	}
	return asm.Register(v), nil
}

// immediate parses a decimal or 0x-hex number, optionally negative, that fits in
// bits (as a signed or an unsigned value).
func immediate(s string, bits int) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	u, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+"), 0, 64)
	if err != nil {
		return 0, fmt.Errorf("bad immediate %q", s)
	}
	if bits == 32 && u > 0xffffffff {
		return 0, fmt.Errorf("immediate %q does not fit 32 bits", s)
	}
	v := int64(u)
	if neg {
		v = -v
	}
	if bits == 32 {
		v = int64(int32(v)) // 0xffffffff means -1, as the encoding does
	}
	return v, nil
}

// memOperand parses [%rN], [%rN+off] or [%rN-off].
func memOperand(s string) (asm.Register, int16, error) {
	inner, open := strings.CutPrefix(s, "[")
	inner, closed := strings.CutSuffix(inner, "]")
	if !open || !closed {
		return 0, 0, fmt.Errorf("bad memory operand %q", s)
	}
	regPart, offPart := inner, ""
	if i := strings.IndexAny(inner, "+-"); i >= 0 {
		regPart, offPart = inner[:i], inner[i:]
	}
	r, err := register(regPart)
	if err != nil || offPart == "" {
		return r, 0, err
	}
	v, err := immediate(offPart, 64)
	if err != nil || v != int64(int16(v)) {
		return r, 0, fmt.Errorf("bad offset in %q", s)
	}
	return r, int16(v), nil
}

// target parses a jump target: +N / -N, or a label to resolve later. inImm puts
// a numeric target in the immediate (calls, ja32) instead of the offset.
func target(s string, ins *asm.Instruction, inImm bool) (string, error) {
	if !strings.HasPrefix(s, "+") && !strings.HasPrefix(s, "-") {
		return s, nil
	}
	v, err := immediate(s, 64)
	if err != nil {
		return "", err
	}
	if inImm {
		ins.Constant = v
	} else if v != int64(int16(v)) {
		return "", fmt.Errorf("jump offset %s out of 16-bit range", s)
	} else {
		ins.Offset = int16(v)
	}
	return "", nil
}

// ja32Op is gotol: ja with a 32-bit target in the immediate.
var ja32Op = asm.OpCode(asm.Jump32Class).SetJumpOp(asm.Ja)
