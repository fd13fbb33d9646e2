package serve

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/internal/sys/wire"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/object"
)

// A C extension's globals (an ELF object's .data, .rodata and .bss) live in
// the heap: at load, each object's sections are laid out in one allocation
// (object.Layout), initialised from their images, and its programs are
// linked against their addresses (loader.Link); Close frees them. An
// application finds a global variable by name with Global (in this
// process) or userspace.Client.Global (wire.OpGlobal): as in a linked
// program, the global variables of all the runtime's objects share one
// namespace, and two objects defining the same one are refused.

// global is a global variable in the heap.
type global struct {
	obj        string // the object defining it
	addr, size uint64 // its address in the runtime's view
}

// loadObjects allocates and initialises each object's globals and links its
// programs, adding them to progs under their function names.
func (rt *Runtime) loadObjects(objs []*object.Object, progs map[string]asm.Instructions) error {
	for _, obj := range objs {
		addr, err := rt.placeGlobals(obj)
		if err != nil {
			return err
		}
		for _, p := range obj.Programs {
			if _, dup := progs[p.Name]; dup {
				return fmt.Errorf("serve: two programs named %q (the second in %s)", p.Name, obj.Name)
			}
			if progs[p.Name], err = loader.Link(p, addr); err != nil {
				return fmt.Errorf("serve: %w", err)
			}
		}
	}
	return nil
}

// placeGlobals puts obj's sections in the heap and returns their addresses.
func (rt *Runtime) placeGlobals(obj *object.Object) (map[string]uint64, error) {
	if len(obj.Sections) == 0 {
		return map[string]uint64{}, nil
	}
	align := obj.Align()
	_, span := obj.Layout(0)
	off, err := rt.h.AllocOwned(max(span+align-1, 1))
	if err != nil {
		return nil, fmt.Errorf("serve: %s: globals of %d bytes: %w", obj.Name, span, err)
	}
	rt.globalAllocs = append(rt.globalAllocs, off)
	base := rt.h.Base() // aligned to the heap's size, so an aligned offset is an aligned address
	addr, _ := obj.Layout(base + (off+align-1)/align*align)
	for _, s := range obj.Sections {
		img, err := s.Image(addr)
		if err != nil {
			return nil, fmt.Errorf("serve: %s: %w", obj.Name, err)
		}
		copy(rt.h.Bytes(addr[s.Name]-base, s.Size), img)
		for _, v := range s.Vars {
			if g, dup := rt.globals[v.Name]; dup {
				return nil, fmt.Errorf("serve: global %s is defined by %s and %s", v.Name, g.obj, obj.Name)
			}
			rt.globals[v.Name] = global{obj: obj.Name, addr: addr[s.Name] + v.Off, size: v.Size}
		}
	}
	return addr, nil
}

// Global is the global variable name of the runtime's C extensions: its
// address in the runtime's view (the view pointers in the heap are stored
// in) and its size.
func (rt *Runtime) Global(name string) (addr, size uint64, ok bool) {
	g, ok := rt.globals[name]
	return g.addr, g.size, ok
}

// Globals are the names of the runtime's global variables, sorted.
func (rt *Runtime) Globals() []string { return slices.Sorted(maps.Keys(rt.globals)) }

// globalFor answers wire.OpGlobal: the address of global name, which the
// process will access size bytes of.
func (rt *Runtime) globalFor(name string, size uint64) (uint64, error) {
	g, ok := rt.globals[name]
	switch {
	case !ok && len(rt.globals) == 0:
		return 0, fmt.Errorf("%w %q: the runtime's extensions have no global variables", wire.ErrNoGlobal, name)
	case !ok:
		return 0, fmt.Errorf("%w %q (there are %s)", wire.ErrNoGlobal, name, strings.Join(rt.Globals(), ", "))
	case size > g.size:
		return 0, fmt.Errorf("%w: %s is %d bytes, not %d", wire.ErrNoGlobal, name, g.size, size)
	}
	return g.addr, nil
}

// freeGlobals gives the globals' memory back to the heap.
func (rt *Runtime) freeGlobals() {
	for _, off := range rt.globalAllocs {
		rt.h.FreeOwned(off)
	}
	rt.globalAllocs = nil
}
