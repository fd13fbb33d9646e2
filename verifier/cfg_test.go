package verifier

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
)

func cfg(t *testing.T, src string) (*CFG, error) {
	t.Helper()
	insns, err := bytecode.Assemble(src)
	require.NoError(t, err)
	return BuildCFG(insns)
}

func TestCFG(t *testing.T) {
	g, err := cfg(t, `
		mov %r0, 0
		lddw %r1, 7
	loop:
		add %r0, 1
		call 5
		jlt %r0, 10, loop
		call local sub
		exit
	sub:
		mov %r0, 1
		exit`)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 8}, g.Subprogs)
	assert.Equal(t, map[int]int{6: 8}, g.Calls)
	assert.Equal(t, []int{5}, g.BackEdges)
	assert.Equal(t, []int{4}, g.HelperCalls)
	assert.Equal(t, []int{3}, g.Succ[1], "lddw continues after its second slot")
	assert.Nil(t, g.Succ[2], "an lddw second half is no instruction")
	assert.Equal(t, []int{6, 3}, g.Succ[5])
	assert.Nil(t, g.Succ[7], "exit")
}

func TestCFGRejects(t *testing.T) {
	for src, want := range map[string]string{
		"mov %r0, 0\nja +1\nmov %r0, 1\nexit":                         "insn 2: unreachable instruction",
		"mov %r0, 0\ncall local f\nexit\nf:\nmov %r0, 1\nja -4\nexit": "insn 4: jump to 1 leaves the subprogram starting at 3",
		"call local f\nmov %r0, 0\nf:\nmov %r0, 1\nexit":              "insn 1: falls through into the subprogram starting at 2",
		"mov %r0, 1": "insn 0: MovImm: last instruction falls off the end of the program",
	} {
		_, err := cfg(t, src)
		assert.EqualError(t, err, want, src)
		assert.ErrorIs(t, err, ErrRejected)
		var be *bytecode.Error
		assert.Equal(t, strings.Contains(want, "falls off"), errors.As(err, &be),
			"only bytecode's own refusal unwraps to its error: %s", src)
	}
}
