package jit_test

import (
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
)

// BenchmarkJITvsInterp runs the benchmark corpus on the JIT and on the
// interpreter in one benchmark and reports both times and the speedup (goal:
// at least 10×). The heap programs use the JIT's sandbox as their heap, and
// the interpreter the same memory.
func BenchmarkJITvsInterp(b *testing.B) {
	m := machine(b)
	sb := m.Sandbox()
	im := interp.NewMachine()
	im.AttachHeap(unsafe.Pointer(&sb[0]), uint64(len(sb)), m.Base())
	for _, bc := range benchprog.Corpus {
		b.Run(bc.Name, func(b *testing.B) {
			insns, want := corpusProgram(b, m, bc)
			jp := compile(b, insns)
			ip, err := interp.Load(insns)
			require.NoError(b, err)
			jr0, err := m.Run(jp, nil)
			require.NoError(b, err)
			ir0, err := im.Run(ip, nil)
			require.NoError(b, err)
			require.Equal(b, ir0, jr0)
			if bc.Setup != nil {
				require.Equal(b, want, jr0)
			}
			var interpTime time.Duration
			start := time.Now()
			for b.Loop() {
				if _, err := m.Run(jp, nil); err != nil {
					b.Fatal(err)
				}
			}
			jitNs := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			// The interpreter: as many runs as fit in a similar time.
			runs := 0
			t0 := time.Now()
			for time.Since(t0) < 200*time.Millisecond {
				im.Run(ip, nil)
				runs++
			}
			interpTime = time.Since(t0)
			interpNs := float64(interpTime.Nanoseconds()) / float64(runs)
			b.ReportMetric(jitNs, "jit-ns/run")
			b.ReportMetric(interpNs, "interp-ns/run")
			b.ReportMetric(interpNs/jitNs, "speedup")
			b.ReportMetric(jitNs/float64(im.Executed), "jit-ns/insn")
		})
	}
}

// dataOff is where benchmark data goes in a sandbox: past the stack and
// context.
const dataOff = 256 << 10

// corpusProgram assembles a corpus program and sets up its data in m's sandbox,
// prefixing the program with the load of r6. It returns the expected result.
func corpusProgram(b *testing.B, m *jit.Machine, bc benchprog.Program) (asm.Instructions, uint64) {
	insns, want, err := bc.Build(m.Sandbox()[dataOff:dataOff+benchprog.Size], m.Base()+dataOff)
	require.NoError(b, err)
	return insns, want
}

// BenchmarkEmpty is the fixed cost of one run: entry, exit and the Go loop.
func BenchmarkEmpty(b *testing.B) {
	m := machine(b)
	p := compile(b, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
	for _, n := range []int{0, 48} { // no context; the runtime's
		ctx := make([]byte, n)
		b.Run(fmt.Sprintf("ctx-%d", n), func(b *testing.B) {
			for b.Loop() {
				m.Run(p, ctx)
			}
		})
	}
}

// BenchmarkGuards measures what the memory guards cost: the corpus compiled
// with every access guarded, with loads unguarded (performance mode) and with
// no guards, run alternately in one benchmark (goal: guarded within 5% of
// unguarded).
func BenchmarkGuards(b *testing.B) {
	m := machine(b)
	for _, bc := range benchprog.Corpus {
		b.Run(bc.Name, func(b *testing.B) {
			insns, _ := corpusProgram(b, m, bc)
			var progs [3]*jit.Program
			for g := range progs {
				p, err := jit.CompileGuarded(insns, jit.Guard(g))
				require.NoError(b, err)
				defer p.Close()
				progs[g] = p
			}
			run := func(p *jit.Program) func() { return func() { m.Run(p, nil) } }
			ns := testutil.Alternate(b, 256, run(progs[0]), run(progs[1]), run(progs[2]))
			b.ReportMetric(ns[jit.GuardAll], "guarded-ns/run")
			b.ReportMetric(ns[jit.GuardStores], "perfmode-ns/run")
			b.ReportMetric(ns[jit.GuardNone], "unguarded-ns/run")
			b.ReportMetric(100*(ns[jit.GuardAll]/ns[jit.GuardNone]-1), "overhead-%")
			b.ReportMetric(0, "ns/op")
		})
	}
}
