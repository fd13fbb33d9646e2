//go:build kflextrace

package interp

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
)

// TestTrace: the hook sees each instruction run, by slot (lddw takes two),
// with the registers before it.
func TestTrace(t *testing.T) {
	insns, err := bytecode.Assemble("lddw %r0, 5\nadd %r0, 2\nja +0\nexit")
	require.NoError(t, err)
	p, err := Load(insns)
	require.NoError(t, err)
	m := NewMachine()
	var slots []int
	var r0 []uint64
	m.Trace = func(slot int, regs *[11]uint64) {
		slots = append(slots, slot)
		r0 = append(r0, regs[0])
	}
	v, err := m.Run(p, nil)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), v)
	assert.Equal(t, []int{0, 2, 3, 4}, slots)
	assert.Equal(t, []uint64{0, 5, 7, 7}, r0)
}
