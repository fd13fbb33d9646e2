package kernel

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Run test-runs a syscall program once on a copy of ctx and returns the low 32
// bits of r0 (all BPF_PROG_TEST_RUN reports) and the context after the run.
func (p *Program) Run(ctx []byte) (uint32, []byte, error) {
	if p.Type != Syscall {
		return 0, nil, fmt.Errorf("run: %w: %v (want syscall)", ErrWrongType, p.Type)
	}
	opts := ebpf.RunOptions{}
	var out []byte
	if len(ctx) > 0 {
		out = make([]byte, len(ctx))
		opts.Context, opts.ContextOut = ctx, out
	}
	r0, err := p.Program.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run: %w", err)
	}
	return r0, out, nil
}

// Bench test-runs an XDP program repeat times on a 64-byte packet and returns
// r0 and the kernel's mean time per run.
func (p *Program) Bench(repeat int) (uint32, time.Duration, error) {
	if p.Type != XDP {
		return 0, 0, fmt.Errorf("bench: %w: %v (want xdp)", ErrWrongType, p.Type)
	}
	r0, d, err := p.Program.Benchmark(make([]byte, 64), repeat, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("test run: %w", err)
	}
	return r0, d, nil
}
