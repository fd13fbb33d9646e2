package serve_test

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/verifier"
)

const dataOff = 256 << 10

// corpus compiles each benchmark program three ways: every access guarded,
// with the verifier's findings (sanitize once, then unguarded), and with no
// guards; all three must compute the expected result. The data structure's
// address comes as the runtime passes a pointer argument: the context's first
// word, which the engine puts in r3 masked into the sandbox (loader.Config).
func corpus(t testing.TB, m *jit.Machine, bc benchprog.Program) (progs [3]*jit.Program, ctx []byte, elided, total int) {
	insns, err := bytecode.Assemble(bc.Uncast())
	require.NoError(t, err)
	var want uint64
	ctx = make([]byte, 8)
	if bc.Setup != nil {
		var r6 uint64
		r6, want = bc.Setup(m.Sandbox()[dataOff:dataOff+benchprog.Size], m.Base()+dataOff)
		binary.LittleEndian.PutUint64(ctx, r6)
		insns = append(asm.Instructions{asm.Mov.Reg(asm.R6, asm.R3)}, insns...)
	}
	res, err := verifier.Verify(insns, verifier.Config{CtxSize: len(ctx), EntryArg: true})
	require.NoError(t, err, bc.Name)
	for i, o := range []jit.Options{{Guard: jit.GuardAll}, {Access: loader.AccessModes(res)}, {Guard: jit.GuardNone}} {
		p, err := jit.CompileProgram(res.Program, o)
		require.NoError(t, err)
		progs[i] = p
		r0, err := m.Run(p, ctx)
		require.NoError(t, err)
		if bc.Setup != nil {
			require.Equal(t, want, r0, "%s, options %d", bc.Name, i)
		}
	}
	return progs, ctx, res.GuardsElided, res.GuardsTotal
}

func jitMachine(t testing.TB) *jit.Machine {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	m, err := jit.NewMachine(1 << 20)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func TestVerifiedGuardsCorrect(t *testing.T) {
	m := jitMachine(t)
	for _, bc := range benchprog.Corpus {
		progs, _, elided, total := corpus(t, m, bc)
		for _, p := range progs {
			p.Close()
		}
		t.Logf("%-16s %d of %d accesses unguarded after the verifier", bc.Name, elided, total)
	}
}

// BenchmarkVerifiedGuards: the guards' cost once the verifier has placed them
// (sanitize a pointer once, then access it unguarded), against every access
// guarded and no guards, alternating in one run.
func BenchmarkVerifiedGuards(b *testing.B) {
	m := jitMachine(b)
	for _, bc := range benchprog.Corpus {
		b.Run(bc.Name, func(b *testing.B) {
			progs, ctx, elided, total := corpus(b, m, bc)
			defer func() {
				for _, p := range progs {
					p.Close()
				}
			}()
			run := func(p *jit.Program) func() { return func() { m.Run(p, ctx) } }
			ns := testutil.Alternate(b, 256, run(progs[0]), run(progs[1]), run(progs[2]))
			b.ReportMetric(ns[0], "all-guarded-ns")
			b.ReportMetric(ns[1], "verified-ns")
			b.ReportMetric(ns[2], "unguarded-ns")
			b.ReportMetric(100*(ns[1]/ns[2]-1), "verified-overhead-%")
			if total > 0 {
				b.ReportMetric(100*float64(elided)/float64(total), "elided-%")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestForgedSpillStaysInSandbox runs, with the verifier's placement of guards,
// a program that spills a stack pointer, overwrites the slot through a heap
// alias of its frame (frames live in the sandbox) with the address of memory
// outside it, and dereferences what it reads back. The read must land in the
// sandbox, not on the secret.
func TestForgedSpillStaysInSandbox(t *testing.T) {
	m := jitMachine(t)
	secret := new(uint64)
	*secret = 0x5ec2e7_5ec2e7
	addr := uint64(uintptr(unsafe.Pointer(secret)))
	require.False(t, addr >= m.Base() && addr < m.Base()+uint64(len(m.Sandbox())), "the secret is outside the sandbox")
	insns, err := bytecode.Assemble(fmt.Sprintf(`
		stdw [%%r10-16], 0
		mov %%r2, %%r10
		add %%r2, -16
		stxdw [%%r10-8], %%r2
		mov %%r4, %%r10
		and %%r4, -1
		lddw %%r5, %#x
		stxdw [%%r4-8], %%r5
		ldxdw %%r2, [%%r10-8]
		ldxdw %%r0, [%%r2+0]
		exit`, addr))
	require.NoError(t, err)
	p, err := loader.Load(insns, loader.Options{JIT: true, Config: &verifier.Config{}})
	require.NoError(t, err)
	defer p.Close()
	r0, err := m.Run(p.JIT, nil)
	require.NoError(t, err)
	require.NotEqual(t, *secret, r0, "the extension read memory outside its sandbox")
	runtime.KeepAlive(secret)
}
