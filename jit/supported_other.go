//go:build !amd64

package jit

import (
	"fmt"
	"io"
	"runtime"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
)

// Supported reports whether this platform has the JIT.
func Supported() error {
	return fmt.Errorf("jit: %w: no code generator for %s; use jit/interp", abi.ErrNotSupported, runtime.GOARCH)
}

func compile([]bytecode.Slot, Options) ([]byte, []int, guardCounts, error) {
	return nil, nil, guardCounts{}, Supported()
}

type guardCounts struct{ kept, elided int }

func enter(uintptr) { panic("jit: unsupported") }

// Listing is unavailable without a code generator.
func Listing(io.Writer, asm.Instructions, Guard) error { return Supported() }
