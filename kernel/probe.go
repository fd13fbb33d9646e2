package kernel

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
)

// ErrNotSupported is returned, wrapped with the missing feature, when this
// kernel or process cannot do what was asked: kflex's one
// (abi.ErrNotSupported), which the JIT and rseq wrap too.
var ErrNotSupported = abi.ErrNotSupported

// FeatureError names a missing kernel feature or privilege.
type FeatureError struct {
	Feature string
	Err     error
}

func (e *FeatureError) Error() string {
	return fmt.Sprintf("%s: %v: %v", e.Feature, ErrNotSupported, e.Err)
}
func (e *FeatureError) Unwrap() []error { return []error{ErrNotSupported, e.Err} }

type probe struct {
	once sync.Once
	err  error
}

func (p *probe) run(feature string, fn func() error) error {
	p.once.Do(func() {
		if err := fn(); err != nil {
			p.err = &FeatureError{Feature: feature, Err: err}
		}
	})
	return p.err
}

var progProbe, arenaProbe probe

// Supported reports whether this process can load and test-run syscall and XDP
// programs (root or CAP_BPF, a kernel with BPF_PROG_TYPE_SYSCALL: 5.14+).
func Supported() error {
	return progProbe.run("BPF program load and test run", func() error {
		if os.Geteuid() != 0 {
			return errors.New("needs root (CAP_BPF and CAP_PERFMON)")
		}
		for _, typ := range []ProgramType{Syscall, XDP} {
			p, err := Load(asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, typ, nil)
			if err != nil {
				return err
			}
			p.Close()
		}
		return nil
	})
}

// HaveArena reports whether BPF arenas (Linux 6.9+) can be created and mapped.
func HaveArena() error {
	return arenaProbe.run("BPF arena", func() error {
		if err := Supported(); err != nil {
			return err
		}
		a, err := NewArena(1 << 20)
		if err != nil {
			return err
		}
		return a.Close()
	})
}
