package kernel

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit/interp"
)

// The benchmark programs, as text. loopProgram is compute-bound: a
// linear-congruential generator mixed into r0 for 1000 rounds.
const loopProgram = `
	mov %r0, 0
	mov %r1, 1000
	mov %r2, 12345
loop:
	mul %r2, 1103515245
	add %r2, 12345
	mov %r3, %r2
	rsh %r3, 16
	xor %r0, %r3
	sub %r1, 1
	jne %r1, 0, loop
	exit`

// hashProgram looks up 16 keys in an open-addressing hash table of 1024
// 16-byte buckets {key, value} at the start of the heap (r6), probing up to 8
// buckets per key, and returns the sum of the values found.
const hashProgram = `
	mov %r0, 0
	mov %r7, 0
outer:
	mov %r2, %r7
	mul %r2, 7
	add %r2, 1
	mov32 %r3, %r2
	mul32 %r3, 0x9e3779b1
	rsh32 %r3, 22
	mov %r8, 0
probe:
	mov %r4, %r3
	lsh %r4, 4
	add %r4, %r6
	ldxdw %r5, [%r4+0]
	jeq %r5, %r2, found
	add %r3, 1
	and %r3, 1023
	add %r8, 1
	jlt %r8, 8, probe
	ja next
found:
	ldxdw %r5, [%r4+8]
	add %r0, %r5
next:
	add %r7, 1
	jlt %r7, 16, outer
	exit`

const hashBuckets = 1024

// fillHashTable puts keys 1, 8, 15, ... (those the program looks up) and as many
// other keys in the table, so that probes collide.
func fillHashTable(mem []byte) (want uint64) {
	put := func(key, val uint64) {
		b := uint64(uint32(key)*0x9e3779b1) >> 22
		for binary.LittleEndian.Uint64(mem[b*16:]) != 0 {
			b = (b + 1) % hashBuckets
		}
		binary.LittleEndian.PutUint64(mem[b*16:], key)
		binary.LittleEndian.PutUint64(mem[b*16+8:], val)
	}
	for i := uint64(0); i < 16; i++ {
		put(1000+i*3, 1)
		put(i*7+1, i+100)
		want += i + 100
	}
	return want
}

// heapPrologue points r6 at the heap: the arena's user address cast to the
// kernel view. refArena makes the kernel associate the arena (the interpreter
// gets a plain constant of the same width instead).
func heapPrologue(a *Arena, refArena bool) asm.Instructions {
	ref := asm.LoadImm(asm.R1, 0, asm.DWord)
	if refArena {
		ref = a.Ref(asm.R1)
	}
	return asm.Instructions{ref, asm.LoadImm(asm.R6, int64(a.Base()), asm.DWord), castKern(asm.R6)}
}

// BenchmarkInterpVsKernel runs each benchmark program in the interpreter and in
// the kernel (XDP test runs, JIT-compiled) in the same benchmark, and reports
// both per-run times, the interpreter's time per executed instruction, and the
// ratio interpreter/kernel: the figure kflex's JIT has to close.
func BenchmarkInterpVsKernel(b *testing.B) {
	requireArena(b)
	a, err := NewArena(1 << 20)
	require.NoError(b, err)
	defer a.Close()
	want := fillHashTable(a.Bytes())
	for _, bc := range []struct {
		name  string
		text  string
		heap  bool
		check uint64
	}{
		{"loop", loopProgram, false, 0},
		{"hash-lookup", hashProgram, true, want},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body, err := bytecode.Assemble(bc.text)
			require.NoError(b, err)
			kins, iins := body, body
			if bc.heap {
				kins = append(heapPrologue(a, true), body...)
				iins = append(heapPrologue(a, false), body...)
			}
			ip, err := interp.Load(iins)
			require.NoError(b, err)
			m := interp.NewMachine()
			m.AttachHeap(a.Pointer(), a.Size(), a.Base())
			r0, err := m.Run(ip, nil)
			require.NoError(b, err)
			if bc.check != 0 {
				require.Equal(b, bc.check, r0, "interpreter result")
			}
			executed := m.Executed

			kp, err := Load(kins, XDP, nil)
			require.NoError(b, err)
			defer kp.Close()
			kr0, _, err := kp.Bench(1)
			require.NoError(b, err)
			require.Equal(b, uint32(r0), kr0, "kernel and interpreter agree")

			start := time.Now()
			for b.Loop() {
				if _, err := m.Run(ip, nil); err != nil {
					b.Fatal(err)
				}
			}
			interpNs := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			_, kd, err := kp.Bench(max(b.N, 1000))
			require.NoError(b, err)
			kernelNs := float64(kd.Nanoseconds())
			if kernelNs == 0 {
				kernelNs = 1 // below the kernel's 1 ns resolution
			}
			b.ReportMetric(interpNs, "interp-ns/run")
			b.ReportMetric(kernelNs, "kernel-ns/run")
			b.ReportMetric(interpNs/float64(executed), "interp-ns/insn")
			b.ReportMetric(kernelNs/float64(executed), "kernel-ns/insn")
			b.ReportMetric(interpNs/kernelNs, "interp/kernel")
			b.ReportMetric(float64(executed), "insns/run")
		})
	}
}

func TestBenchProgramsAgree(t *testing.T) {
	requireArena(t)
	a, err := NewArena(1 << 20)
	require.NoError(t, err)
	defer a.Close()
	want := fillHashTable(a.Bytes())
	body, err := bytecode.Assemble(hashProgram)
	require.NoError(t, err)
	kp, err := Load(append(heapPrologue(a, true), body...), XDP, nil)
	require.NoError(t, err, "the kernel accepts the hash-table program")
	defer kp.Close()
	kr0, _, err := kp.Bench(1)
	require.NoError(t, err)
	require.Equal(t, uint32(want), kr0, fmt.Sprintf("sum of values %d", want))
}
