package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/object"
)

// A program argument (PROG) is a file: an ELF object (clang -target bpf),
// kflex assembler text or raw bytecode. An ELF object may hold several
// programs, named by their functions: OBJ:NAME chooses one (kflex serve
// OBJ serves them all).

// progArg is a program argument split into its file and, for OBJ:NAME, the
// program's name. A path that exists as written is a file even with a colon
// in it.
func progArg(arg string) (path, name string) {
	if _, err := os.Stat(arg); err == nil {
		return arg, ""
	}
	if i := strings.LastIndexByte(arg, ':'); i > 0 {
		return arg[:i], arg[i+1:]
	}
	return arg, ""
}

// nominalGlobals is where a program's globals are when no heap holds them
// (kflex verify, kflex jit): the heap offset of its first page, as a
// runtime's first allocation could be. The verdict does not depend on it,
// but a program linked so must not run on a heap: its globals would be the
// heap's header. One that runs goes to a runtime as its object
// (loadRunnable), and the runtime places its globals in the heap.
const nominalGlobals = 4096

// loadProgram reads the one program arg names, to verify or disassemble:
// an ELF object's program (OBJ:NAME, or the object's only one), its globals
// placed at nominalGlobals; kflex assembler text; or raw bytecode.
func loadProgram(arg string) (asm.Instructions, error) {
	path, name := progArg(arg)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !isELF(b) {
		if name != "" {
			return nil, fmt.Errorf("%s: not an ELF object, so it holds one program, unnamed (drop :%s)", path, name)
		}
		return decodeProgram(path, b)
	}
	obj, err := object.Read(path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var p *object.Program
	switch {
	case name != "":
		if p, err = obj.Program(name); err != nil {
			return nil, err
		}
	case len(obj.Programs) > 1:
		return nil, chooseOne(path, obj)
	default:
		p = obj.Programs[0]
	}
	addr, _ := obj.Layout(nominalGlobals)
	return loader.Link(p, addr)
}

// loadPrograms reads kflex serve's program arguments: raw programs by the
// file's name without its extension, and ELF objects with the programs
// named (OBJ:NAME, OBJ:OTHER, ...) or all of them (OBJ), each object read
// once, whichever arguments name it.
func loadPrograms(args []string) (map[string]asm.Instructions, []*object.Object, error) {
	progs := map[string]asm.Instructions{}
	type chosen struct {
		b     []byte
		names []string
		all   bool
	}
	var paths []string
	objs := map[string]*chosen{}
	for _, arg := range args {
		path, name := progArg(arg)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		if isELF(b) {
			c := objs[path]
			if c == nil {
				c = &chosen{b: b}
				objs[path] = c
				paths = append(paths, path)
			}
			c.all = c.all || name == ""
			if name != "" {
				c.names = append(c.names, name)
			}
			continue
		}
		if name != "" {
			return nil, nil, fmt.Errorf("%s: not an ELF object, so it holds one program, unnamed (drop :%s)", path, name)
		}
		insns, err := decodeProgram(path, b)
		if err != nil {
			return nil, nil, err
		}
		base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		if _, dup := progs[base]; dup {
			return nil, nil, fmt.Errorf("two programs named %q", base)
		}
		progs[base] = insns
	}
	var out []*object.Object
	for _, path := range paths {
		c := objs[path]
		obj, err := object.Read(path, bytes.NewReader(c.b))
		if err != nil {
			return nil, nil, err
		}
		if !c.all {
			if obj, err = obj.Select(c.names...); err != nil {
				return nil, nil, err
			}
		}
		out = append(out, obj)
	}
	return progs, out, nil
}

// loadRunnable reads the one program arg names, to run it in a runtime: its
// name, and either the program (progs, one) or the ELF object holding it
// (objs, one, selected to that program), whose globals the runtime places in
// its heap.
func loadRunnable(arg string) (string, map[string]asm.Instructions, []*object.Object, error) {
	path, name := progArg(arg)
	progs, objs, err := loadPrograms([]string{arg})
	switch {
	case err != nil:
		return "", nil, nil, err
	case len(objs) == 0:
		for n := range progs {
			return n, progs, nil, nil
		}
	case name == "" && len(objs[0].Programs) > 1:
		return "", nil, nil, chooseOne(path, objs[0])
	}
	return objs[0].Programs[0].Name, nil, objs, nil
}

// chooseOne is the error for an object of several programs where one is
// wanted.
func chooseOne(path string, obj *object.Object) error {
	return fmt.Errorf("%s holds programs %s: choose one with %s:NAME", path, strings.Join(obj.Names(), ", "), path)
}

func isELF(b []byte) bool { return bytes.HasPrefix(b, []byte("\x7fELF")) }

// decodeProgram reads a program that is not an ELF object: kflex assembler
// text or raw bytecode.
func decodeProgram(path string, b []byte) (asm.Instructions, error) {
	var insns asm.Instructions
	var err error
	if utf8.Valid(b) && (filepath.Ext(path) == ".s" || filepath.Ext(path) == ".asm" || bytes.IndexByte(b, 0) < 0) {
		insns, err = bytecode.Assemble(string(b))
	} else {
		insns, err = bytecode.Decode(b)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return insns, nil
}
