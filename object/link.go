package object

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
)

// Names are the names of o's programs, in order.
func (o *Object) Names() []string {
	names := make([]string, len(o.Programs))
	for i, p := range o.Programs {
		names[i] = p.Name
	}
	return names
}

// Program is o's program called name; for an unknown name, the error lists
// the ones o has.
func (o *Object) Program(name string) (*Program, error) {
	for _, p := range o.Programs {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%s: no program %q (it has %s)", o.Name, name, strings.Join(o.Names(), ", "))
}

// Select is o with only the programs named (each once, in o's order), and
// all of its globals: what a runtime that serves some of an object's
// programs loads.
func (o *Object) Select(names ...string) (*Object, error) {
	want := map[string]bool{}
	for _, n := range names {
		if _, err := o.Program(n); err != nil {
			return nil, err
		}
		want[n] = true
	}
	sel := *o
	sel.Programs = slices.DeleteFunc(slices.Clone(o.Programs), func(p *Program) bool { return !want[p.Name] })
	return &sel, nil
}

// Externs are the functions p calls that its object does not define, each
// once, sorted.
func (p *Program) Externs() []string {
	set := map[string]bool{}
	for _, e := range p.externs {
		set[e.name] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// Globals are the sections of globals p uses, each once, sorted.
func (p *Program) Globals() []string {
	set := map[string]bool{}
	for _, l := range p.loads {
		set[l.section] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// Link returns p's instructions, ready to verify: each global's lddw loads
// addr[section] plus its offset (the section's address in the executor's
// view), and each call to an extern goes to the subprogram externs has under
// its name, appended once (in the order of the first calls), its first
// instruction named by a symbol. p is not changed.
func (p *Program) Link(externs map[string]asm.Instructions, addr map[string]uint64) (asm.Instructions, error) {
	for _, ins := range p.insns {
		if _, ok := externs[ins.Symbol()]; ok {
			// The verifier and the runtime know the externs by name (the
			// lock's are shielded from cancels): the object must not
			// define one.
			return nil, fmt.Errorf("%s: program %s: function %s has the name of the runtime's own, which the loader links",
				p.obj, p.Name, ins.Symbol())
		}
	}
	insns := slices.Clone(p.insns)
	for _, l := range p.loads {
		a, ok := addr[l.section]
		if !ok {
			return nil, fmt.Errorf("%s: program %s: no address for section %s", p.obj, p.Name, l.section)
		}
		insns[l.insn].Constant = int64(a + l.off)
	}
	start, total := bytecode.Slots(insns)
	at := map[string]int{} // each extern's first slot
	for _, e := range p.externs {
		if _, ok := at[e.name]; !ok {
			sub, ok := externs[e.name]
			if !ok || len(sub) == 0 {
				return nil, fmt.Errorf("%s: program %s calls %s, which neither the object nor the runtime defines (the runtime links %s)",
					p.obj, p.Name, e.name, strings.Join(slices.Sorted(maps.Keys(externs)), ", "))
			}
			at[e.name] = total
			insns = append(insns, sub...)
			insns[len(insns)-len(sub)] = sub[0].WithSymbol(e.name)
			_, n := bytecode.Slots(sub)
			total += n
		}
		insns[e.insn].Constant = int64(at[e.name] - start[e.insn] - 1)
	}
	return insns, nil
}

// Image is s's initial contents with its pointer initialisers resolved:
// each holds addr[section] plus its offset.
func (s *Section) Image(addr map[string]uint64) ([]byte, error) {
	b := make([]byte, s.Size)
	copy(b, s.Data)
	for _, p := range s.ptrs {
		a, ok := addr[p.section]
		if !ok {
			return nil, fmt.Errorf("section %s: no address for section %s", s.Name, p.section)
		}
		binary.LittleEndian.PutUint64(b[p.off:], a+p.addend)
	}
	return b, nil
}

// Layout gives o's sections of globals addresses one after another from
// base, each aligned as it asks: where the verifier sees them when there is
// no heap (kflex verify), and how a loader may place them in one allocation.
// It returns the addresses and the bytes they span.
func (o *Object) Layout(base uint64) (map[string]uint64, uint64) {
	addr := map[string]uint64{}
	end := base
	for _, s := range o.Sections {
		end = (end + s.Align - 1) / s.Align * s.Align
		addr[s.Name] = end
		end += s.Size
	}
	return addr, end - base
}

// Align is the largest alignment o's sections of globals ask for (at least
// 1): a Layout from a base aligned so keeps every section aligned.
func (o *Object) Align() uint64 {
	a := uint64(1)
	for _, s := range o.Sections {
		a = max(a, s.Align)
	}
	return a
}
