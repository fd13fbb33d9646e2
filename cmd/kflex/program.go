package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"unicode/utf8"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
)

// loadProgram reads a program from a file: an ELF object (its first program
// in section order), kflex assembler text, or raw bytecode.
func loadProgram(path string) (asm.Instructions, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: read ELF: %w", path, err)
		}
		names := make([]string, 0, len(spec.Programs))
		for n := range spec.Programs {
			names = append(names, n)
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%s: ELF object has no program", path)
		}
		sort.Strings(names)
		return spec.Programs[names[0]].Instructions, nil
	case utf8.Valid(b) && (filepath.Ext(path) == ".s" || filepath.Ext(path) == ".asm" || bytes.IndexByte(b, 0) < 0):
		insns, err := bytecode.Assemble(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return insns, nil
	default:
		insns, err := bytecode.Decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return insns, nil
	}
}
