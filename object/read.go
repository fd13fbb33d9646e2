package object

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
)

// Object is an ELF object read by Read or Open.
type Object struct {
	// Name is the name it was read under (a path): every error starts with
	// it.
	Name string
	// Programs are its programs, by section and then address.
	Programs []*Program
	// Sections are its sections of globals, in file order.
	Sections []*Section
}

// Section is one section of globals: one object in the heap once loaded.
type Section struct {
	Name     string
	Size     uint64
	Align    uint64 // its alignment in bytes (at least 1)
	Data     []byte // initial contents; nil for zeros (.bss)
	ReadOnly bool   // .rodata: the compiler does not write it (nothing enforces it)
	// Vars are its global (not static) variables, by offset: the names an
	// application finds them by.
	Vars   []Var
	ptrs   []pointer
	nobits bool // .bss: no contents in the file
}

// Var is a global variable: Size bytes at offset Off of its section.
type Var struct {
	Name      string
	Off, Size uint64
}

// pointer is a pointer initialiser: the 8 bytes at off hold the address of
// section's byte addend.
type pointer struct {
	off     uint64
	section string
	addend  uint64
}

// Program is one program of an object: its function and every function it
// calls, in one instruction list.
type Program struct {
	Name    string // its function's
	Section string // the section it is in
	obj     string
	insns   asm.Instructions
	loads   []load   // lddw instructions of a global's address
	externs []extern // calls to functions the object does not define
}

// load: instruction insn (an lddw) loads the address of byte off of section.
type load struct {
	insn    int
	section string
	off     uint64
}

// extern: instruction insn calls the function name, which the object does
// not define.
type extern struct {
	insn int
	name string
}

// The BPF relocation types (llvm/BinaryFormat/ELFRelocs/BPF.def).
const (
	relNone     = 0  // R_BPF_NONE
	rel64       = 1  // R_BPF_64_64: an lddw's 64-bit immediate
	relAbs64    = 2  // R_BPF_64_ABS64: 8 bytes of data
	relAbs32    = 3  // R_BPF_64_ABS32: 4 bytes of data
	relNoDyld32 = 4  // R_BPF_64_NODYLD32: BTF and debug information
	relCall     = 10 // R_BPF_64_32: a call's 32-bit immediate
)

var relNames = map[uint32]string{relNone: "R_BPF_NONE", rel64: "R_BPF_64_64", relAbs64: "R_BPF_64_ABS64",
	relAbs32: "R_BPF_64_ABS32", relNoDyld32: "R_BPF_64_NODYLD32", relCall: "R_BPF_64_32"}

func relName(t uint32) string {
	if n, ok := relNames[t]; ok {
		return n
	}
	return fmt.Sprintf("relocation type %d", t)
}

// Open reads the object in file path.
func Open(path string) (*Object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(path, f)
}

// Read reads an object from r; name (its path) starts every error.
func Read(name string, r io.ReaderAt) (obj *Object, err error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%s: not an ELF object: %w", name, err)
	}
	defer f.Close()
	switch {
	case f.Machine != elf.EM_BPF:
		return nil, fmt.Errorf("%s: an ELF object for %v, not BPF (compile with clang -target bpf)", name, f.Machine)
	case f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB:
		return nil, fmt.Errorf("%s: a %v %v BPF object; kflex runs 64-bit little-endian ones (-target bpfel)", name, f.Class, f.Data)
	case f.Type != elf.ET_REL:
		return nil, fmt.Errorf("%s: an ELF object of type %v; kflex reads relocatable objects (clang -c)", name, f.Type)
	}
	rd := &reader{name: name, f: f, kinds: make([]kind, len(f.Sections)), funcs: make([][]*function, len(f.Sections))}
	if err := rd.read(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rd.obj, nil
}

// kind is what a section is to kflex.
type kind uint8

const (
	ignored kind = iota // not loaded: BTF, debug information, the license
	code                // executable: programs and subprograms
	data                // globals: .data, .rodata, .bss
)

type reader struct {
	name  string
	f     *elf.File
	syms  []elf.Symbol
	kinds []kind        // by section index
	funcs [][]*function // by section index, by address
	obj   *Object
	secs  map[int]*Section // the globals' sections, by section index
}

// function is one function of a code section.
type function struct {
	name       string
	global     bool
	sec        int
	start, end uint64 // byte offsets in the section
	insns      asm.Instructions
	slots      []int // each instruction's first slot
	calls      []call
	loads      []load
	externs    []extern
	relocated  map[int]bool // instructions a relocation resolved
}

// call: instruction insn calls function to.
type call struct {
	insn int
	to   *function
}

func (r *reader) read() error {
	syms, err := r.f.Symbols()
	if err != nil {
		return fmt.Errorf("symbol table: %w", err)
	}
	r.syms = syms
	r.obj = &Object{Name: r.name}
	r.secs = map[int]*Section{}
	for i, s := range r.f.Sections {
		k, err := classify(s)
		if err != nil {
			return err
		}
		r.kinds[i] = k
		if k == data {
			sec, err := newSection(s)
			if err != nil {
				return err
			}
			r.secs[i] = sec
			r.obj.Sections = append(r.obj.Sections, sec)
		}
	}
	if err := r.readFunctions(); err != nil {
		return err
	}
	for _, s := range r.f.Sections {
		switch {
		case s.Type == elf.SHT_RELA && r.kinds[s.Info] != ignored:
			return fmt.Errorf("section %s: RELA relocations; clang writes REL for BPF", s.Name)
		case s.Type != elf.SHT_REL || int(s.Info) >= len(r.kinds) || r.kinds[s.Info] == ignored:
		default:
			if err := r.relocate(s); err != nil {
				return err
			}
		}
	}
	if err := r.localCalls(); err != nil {
		return err
	}
	for _, sec := range r.obj.Sections {
		slices.SortFunc(sec.Vars, func(a, b Var) int { return cmp.Compare(a.Off, b.Off) })
	}
	return r.programs()
}

// classify says what section s is, or why kflex refuses it.
func classify(s *elf.Section) (kind, error) {
	name := s.Name
	switch {
	case s.Flags&elf.SHF_ALLOC == 0, name == "license", name == "version":
		return ignored, nil
	case s.Flags&elf.SHF_EXECINSTR != 0:
		if s.Type != elf.SHT_PROGBITS {
			return 0, fmt.Errorf("section %s: executable but of type %v", name, s.Type)
		}
		return code, nil
	case isGlobals(name):
		return data, nil
	case name == "maps" || name == ".maps":
		return 0, fmt.Errorf("section %s: BPF maps are not part of kflex's interface: keep data in globals (.data, .bss), which live in the heap", name)
	case strings.HasPrefix(name, ".addr_space."):
		return 0, fmt.Errorf("section %s: arena globals (__arena) are not needed: every global lives in the heap", name)
	}
	return 0, fmt.Errorf("section %s: not a section kflex loads (code, .data, .rodata, .bss)", name)
}

// isGlobals reports whether name is a section of globals.
func isGlobals(name string) bool {
	for _, p := range []string{".data", ".rodata", ".bss"} {
		if name == p || strings.HasPrefix(name, p+".") {
			return true
		}
	}
	return false
}

// MaxSection is the largest section of globals kflex loads: larger data
// belongs in memory from kflex_alloc.
const MaxSection = 1 << 30

func newSection(s *elf.Section) (*Section, error) {
	if s.Size > MaxSection {
		return nil, fmt.Errorf("section %s: %d bytes of globals; kflex loads at most %d (allocate large tables with kflex_alloc)", s.Name, s.Size, MaxSection)
	}
	sec := &Section{Name: s.Name, Size: s.Size, Align: max(s.Addralign, 1), ReadOnly: s.Flags&elf.SHF_WRITE == 0}
	if s.Type == elf.SHT_NOBITS {
		sec.nobits = true
		return sec, nil
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("section %s: %w", s.Name, err)
	}
	if !allZero(b) {
		sec.Data = b
	}
	return sec, nil
}

func allZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

// readFunctions decodes every function of the code sections and records the
// global variables of the data sections.
func (r *reader) readFunctions() error {
	for _, sym := range r.syms {
		i := int(sym.Section)
		if sym.Section == elf.SHN_COMMON {
			return fmt.Errorf("symbol %s: a common symbol (compile with -fno-common, clang's default)", sym.Name)
		}
		if sym.Section >= elf.SHN_LORESERVE || i >= len(r.kinds) {
			continue
		}
		bind := elf.ST_BIND(sym.Info)
		global := bind == elf.STB_GLOBAL || bind == elf.STB_WEAK
		switch {
		case r.kinds[i] == code && elf.ST_TYPE(sym.Info) == elf.STT_FUNC:
			r.funcs[i] = append(r.funcs[i], &function{name: sym.Name, global: global, sec: i, start: sym.Value, end: sym.Value + sym.Size,
				relocated: map[int]bool{}})
		case r.kinds[i] == data && elf.ST_TYPE(sym.Info) == elf.STT_OBJECT && global:
			r.secs[i].Vars = append(r.secs[i].Vars, Var{Name: sym.Name, Off: sym.Value, Size: sym.Size})
		}
	}
	for i, fns := range r.funcs {
		if len(fns) == 0 {
			continue
		}
		s := r.f.Sections[i]
		b, err := s.Data()
		if err != nil {
			return fmt.Errorf("section %s: %w", s.Name, err)
		}
		slices.SortFunc(fns, func(a, b *function) int { return cmp.Compare(a.start, b.start) })
		for k, fn := range fns {
			if fn.end == fn.start { // no size: up to the next function
				fn.end = uint64(len(b))
				if k+1 < len(fns) {
					fn.end = fns[k+1].start
				}
			}
			if fn.end > uint64(len(b)) || fn.end <= fn.start || fn.start%bytecode.SlotSize != 0 || (k > 0 && fns[k-1].end > fn.start) {
				return fmt.Errorf("section %s: function %s at [%#x, %#x) is not a whole run of instructions of the section (%d bytes)",
					s.Name, fn.name, fn.start, fn.end, len(b))
			}
			if fn.insns, err = bytecode.Decode(b[fn.start:fn.end]); err != nil {
				return fmt.Errorf("section %s: function %s: %w", s.Name, fn.name, err)
			}
			fn.slots, _ = bytecode.Slots(fn.insns)
		}
	}
	return nil
}

// at finds the instruction at byte off of code section sec: its function
// and index.
func (r *reader) at(sec int, off uint64) (*function, int, error) {
	for _, fn := range r.funcs[sec] {
		if off < fn.start || off >= fn.end {
			continue
		}
		if i, ok := slices.BinarySearch(fn.slots, int(off-fn.start)/bytecode.SlotSize); ok && (off-fn.start)%bytecode.SlotSize == 0 {
			return fn, i, nil
		}
		return nil, 0, fmt.Errorf("offset %#x of section %s is inside an instruction of %s", off, r.f.Sections[sec].Name, fn.name)
	}
	return nil, 0, fmt.Errorf("offset %#x of section %s is in no function", off, r.f.Sections[sec].Name)
}

// relocate applies relocation section rs to its section.
func (r *reader) relocate(rs *elf.Section) error {
	b, err := rs.Data()
	if err != nil {
		return fmt.Errorf("section %s: %w", rs.Name, err)
	}
	rels := make([]elf.Rel64, len(b)/16)
	if len(b)%16 != 0 || binary.Read(bytes.NewReader(b), binary.LittleEndian, rels) != nil {
		return fmt.Errorf("section %s: %d bytes, not a table of 16-byte relocations", rs.Name, len(b))
	}
	target := int(rs.Info)
	for _, rel := range rels {
		typ, symIdx := elf.R_TYPE64(rel.Info), int(elf.R_SYM64(rel.Info))
		if symIdx < 1 || symIdx > len(r.syms) {
			return fmt.Errorf("section %s: relocation at %#x names symbol %d of %d", rs.Name, rel.Off, symIdx, len(r.syms))
		}
		sym := r.syms[symIdx-1]
		if r.kinds[target] == code {
			err = r.relocateCode(target, rel.Off, typ, sym)
		} else {
			err = r.relocateData(r.secs[target], rel.Off, typ, sym)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// relocateCode applies one relocation to the instruction at byte off of
// code section sec.
func (r *reader) relocateCode(sec int, off uint64, typ uint32, sym elf.Symbol) error {
	fn, i, err := r.at(sec, off)
	if err != nil {
		return fmt.Errorf("%s against %s: %w", relName(typ), sym.Name, err)
	}
	ins := &fn.insns[i]
	fn.relocated[i] = true
	where := fmt.Sprintf("function %s, instruction %d (%v)", fn.name, fn.slots[i], ins.OpCode)
	symSec := int(sym.Section)
	switch {
	case typ == rel64 && ins.OpCode.IsDWordLoad():
		switch {
		case sym.Section == elf.SHN_UNDEF:
			return fmt.Errorf("%s: loads the address of %s, which the object does not define (extern variables are not supported)", where, sym.Name)
		case symSec < len(r.kinds) && r.kinds[symSec] == data:
			sec := r.f.Sections[symSec].Name
			fn.loads = append(fn.loads, load{insn: i, section: sec, off: sym.Value + uint64(ins.Constant)})
			return nil
		case symSec < len(r.kinds) && r.kinds[symSec] == code:
			return fmt.Errorf("%s: loads the address of function %s: function pointers are not part of kflex's interface", where, sym.Name)
		}
		return fmt.Errorf("%s: loads the address of %s, in a section kflex does not load", where, sym.Name)
	case typ == relCall && ins.OpCode.JumpOp() == asm.Call && ins.Src == bytecode.CallLocal:
		switch {
		case sym.Section == elf.SHN_UNDEF:
			fn.externs = append(fn.externs, extern{insn: i, name: sym.Name})
			return nil
		case symSec < len(r.kinds) && r.kinds[symSec] == code:
			to, err := r.callee(symSec, sym.Value+uint64((ins.Constant+1)*bytecode.SlotSize))
			if err != nil {
				return fmt.Errorf("%s: call to %s: %w", where, sym.Name, err)
			}
			fn.calls = append(fn.calls, call{insn: i, to: to})
			return nil
		}
		return fmt.Errorf("%s: calls %s, which is not code", where, sym.Name)
	}
	return fmt.Errorf("%s: %s against %s: not a relocation kflex applies here (an lddw's R_BPF_64_64, a call's R_BPF_64_32)", where, relName(typ), sym.Name)
}

// callee is the function starting at byte off of code section sec.
func (r *reader) callee(sec int, off uint64) (*function, error) {
	for _, fn := range r.funcs[sec] {
		if fn.start == off {
			return fn, nil
		}
	}
	return nil, fmt.Errorf("offset %#x of section %s starts no function", off, r.f.Sections[sec].Name)
}

// relocateData applies one relocation to byte off of globals section sec: a
// pointer initialiser.
func (r *reader) relocateData(sec *Section, off uint64, typ uint32, sym elf.Symbol) error {
	where := fmt.Sprintf("section %s, offset %#x", sec.Name, off)
	symSec := int(sym.Section)
	switch {
	case typ != relAbs64:
		return fmt.Errorf("%s: %s against %s: kflex resolves 64-bit pointers (R_BPF_64_ABS64) in globals only", where, relName(typ), sym.Name)
	case sec.Size < 8 || off > sec.Size-8:
		return fmt.Errorf("%s: a pointer past the section's end (%d bytes)", where, sec.Size)
	case sec.nobits:
		return fmt.Errorf("%s: a pointer initialiser in a section without contents", where)
	case sec.Data == nil: // all zeros so far
		sec.Data = make([]byte, sec.Size)
	}
	if symSec >= len(r.kinds) || r.kinds[symSec] != data {
		return fmt.Errorf("%s: a pointer to %s, which is not a global (function pointers are not part of kflex's interface)", where, sym.Name)
	}
	addend := binary.LittleEndian.Uint64(sec.Data[off:])
	sec.ptrs = append(sec.ptrs, pointer{off: off, section: r.f.Sections[symSec].Name, addend: sym.Value + addend})
	return nil
}

// localCalls resolves the calls between functions of one section that have
// no relocation: their immediates are relative already.
func (r *reader) localCalls() error {
	for sec, fns := range r.funcs {
		for _, fn := range fns {
			for i, ins := range fn.insns {
				if ins.OpCode.JumpOp() != asm.Call || ins.Src != bytecode.CallLocal || fn.relocated[i] {
					continue
				}
				off := fn.start + uint64((int64(fn.slots[i])+ins.Constant+1)*bytecode.SlotSize)
				to, err := r.callee(sec, off)
				if err != nil {
					return fmt.Errorf("function %s, instruction %d: call: %w", fn.name, fn.slots[i], err)
				}
				fn.calls = append(fn.calls, call{insn: i, to: to})
			}
		}
	}
	return nil
}

// programs makes a Program of every global function outside .text.
func (r *reader) programs() error {
	for i, fns := range r.funcs {
		if r.f.Sections[i].Name == ".text" {
			continue
		}
		for _, fn := range fns {
			if fn.global {
				r.obj.Programs = append(r.obj.Programs, r.program(fn))
			}
		}
	}
	if len(r.obj.Programs) == 0 {
		return errors.New("no program: put each program's function in a section of its own name, such as SEC(\"kflex\") (include/kflex.h's KFLEX_PROG); functions in .text are subprograms")
	}
	return nil
}

// program lays out main and the functions it calls, transitively, one
// after another, each named by a symbol on its first instruction, and
// resolves the calls among them.
func (r *reader) program(main *function) *Program {
	p := &Program{Name: main.name, Section: r.f.Sections[main.sec].Name, obj: r.name}
	order, index := []*function{main}, map[*function]int{main: 0}
	for k := 0; k < len(order); k++ {
		for _, c := range order[k].calls {
			if _, ok := index[c.to]; !ok {
				index[c.to] = len(order)
				order = append(order, c.to)
			}
		}
	}
	slot, first := make([]int, len(order)), make([]int, len(order)) // each function's first slot and instruction
	total := 0
	for k, fn := range order {
		slot[k], first[k] = total, len(p.insns)
		p.insns = append(p.insns, fn.insns...)
		p.insns[first[k]] = p.insns[first[k]].WithSymbol(fn.name)
		total += fn.slots[len(fn.slots)-1] + int(fn.insns[len(fn.insns)-1].Width())
	}
	for k, fn := range order {
		for _, c := range fn.calls {
			p.insns[first[k]+c.insn].Constant = int64(slot[index[c.to]] - (slot[k] + fn.slots[c.insn]) - 1)
		}
		for _, l := range fn.loads {
			l.insn += first[k]
			p.loads = append(p.loads, l)
		}
		for _, e := range fn.externs {
			e.insn += first[k]
			p.externs = append(p.externs, e)
		}
	}
	return p
}
