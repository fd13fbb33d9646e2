package jit_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit/interp"
)

// deepLoop loops in g, called by f, called by main; each frame has its own
// r6-r9 and a word on its stack. A cancel set before the run stops it at
// the loop's back-edge (slot 22), the first cancellation point.
const deepLoop = `
	mov %r6, 1
	mov %r7, 2
	mov %r8, 3
	mov %r9, 4
	stdw [%r10-8], 100
	call local f
	exit
f:
	mov %r6, 11
	mov %r7, 12
	mov %r8, 13
	mov %r9, 14
	stdw [%r10-16], 200
	call local g
	exit
g:
	mov %r6, 21
	mov %r7, 22
	mov %r8, 23
	mov %r9, 24
	stdw [%r10-8], 300
	mov %r0, 0
	mov %r1, 5
loop:
	add %r0, 1
	jlt %r0, 100, loop
	exit`

// TestStoppedStack: the JIT and the interpreter report the same call stack
// for a program cancelled at the same point: the stop and each call site,
// r0-r9 innermost and r6-r9 as saved at each call, and frame pointers
// through which each frame's stack word reads back.
func TestStoppedStack(t *testing.T) {
	insns, err := bytecode.Assemble(deepLoop)
	require.NoError(t, err)
	jm, jp := machine(t), compile(t, insns)
	im := interp.NewMachine()
	ip, err := interp.Load(insns)
	require.NoError(t, err)
	type engine struct {
		run func() error
		mem interp.Memory
	}
	jm.Cancel()
	im.Cancel()
	engines := map[string]engine{
		"jit":    {func() error { _, err := jm.Run(jp, nil); return err }, jm},
		"interp": {func() error { _, err := im.Run(ip, nil); return err }, im},
	}
	stacks := map[string][]interp.Frame{}
	for name, e := range engines {
		err := e.run()
		require.ErrorIs(t, err, abi.ErrCancelled, name)
		var re *interp.RuntimeError
		require.True(t, errors.As(err, &re), name)
		require.Len(t, re.Stack, 3, name)
		assert.Equal(t, 22, re.Insn, name)
		words := []uint64{}
		for i, off := range []uint64{8, 16, 8} { // g's, f's, main's word
			b, err := e.mem.Bytes(re.Stack[i].FP-off, 8, false)
			require.NoError(t, err, name)
			words = append(words, binary.LittleEndian.Uint64(b))
			re.Stack[i].FP = 0 // each engine's own address
		}
		assert.Equal(t, []uint64{300, 200, 100}, words, name)
		stacks[name] = re.Stack
	}
	want := []interp.Frame{
		{Insn: 22, Regs: [10]uint64{0: 1, 1: 5, 6: 21, 7: 22, 8: 23, 9: 24}, Known: interp.KnownAll},
		{Insn: 12, Regs: [10]uint64{6: 11, 7: 12, 8: 13, 9: 14}, Known: interp.KnownCallees},
		{Insn: 5, Regs: [10]uint64{6: 1, 7: 2, 8: 3, 9: 4}, Known: interp.KnownCallees},
	}
	assert.Equal(t, want, stacks["interp"])
	assert.Equal(t, stacks["interp"], stacks["jit"], "the same stack from both engines")
}
