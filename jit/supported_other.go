//go:build !amd64

package jit

import (
	"errors"
	"io"
	"runtime"

	"github.com/cilium/ebpf/asm"
)

// Supported reports whether this platform has the JIT.
func Supported() error {
	return errors.New("jit: no code generator for " + runtime.GOARCH + "; use jit/interp")
}

func compile([]byte, Guard, []AccessMode) ([]byte, guardCounts, error) {
	return nil, guardCounts{}, Supported()
}

type guardCounts struct{ kept, elided int }

func enter(uintptr) { panic("jit: unsupported") }

// Listing is unavailable without a code generator.
func Listing(io.Writer, asm.Instructions, Guard) error { return Supported() }
