package jit

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/kflex-go/kflex/bytecode"
)

// TestTmpReuse: an access through a register an earlier access sanitized in
// place addresses [sandbox + tmp + off] while nothing between them touched
// tmp or the register, and [register + off] otherwise; both compute the same.
func TestTmpReuse(t *testing.T) {
	if err := Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	m, err := NewMachine(1 << 20)
	require.NoError(t, err)
	defer m.Close()
	for _, tc := range []struct {
		between string
		reuse   bool
	}{
		{"mov %r3, 7", true},
		{"stxdw [%r10-8], %r3", true},
		{"add %r1, 8", false},         // writes the register
		{"ja +0", false},              // a jump: its target starts a block
		{"lsh %r3, %r4", false},       // a shift by a register goes through tmp
		{"ldxdw %r3, [%r4+0]", false}, // a guarded access rewrites tmp
	} {
		src := "mov %r3, 1\nmov %r4, %r1\nldxdw %r0, [%r1+0]\n" + tc.between + "\nldxdw %r2, [%r1+8]\nadd %r0, %r2\nexit"
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err)
		bp, err := bytecode.NewProgram(insns)
		require.NoError(t, err)
		modes := make([]AccessMode, bp.Len())
		modes[2], modes[4] = SanitizeInPlace, NoGuard
		c, err := lower(bp.Slots(), GuardAll, modes)
		require.NoError(t, err)
		var second []string
		for pc := c.starts[4]; pc < c.starts[5]; {
			inst, err := x86asm.Decode(c.a.Buf[pc:c.starts[5]], 64)
			require.NoError(t, err)
			second = append(second, x86asm.IntelSyntax(inst, uint64(pc), nil))
			pc += inst.Len
		}
		got := strings.Join(second, "; ")
		assert.Equal(t, tc.reuse, strings.Contains(got, "r12+r11"), "%s: %s", tc.between, got)

		// Same result as with every access guarded.
		ctx := []byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0}
		p, err := CompileWith(insns, Options{Access: modes})
		require.NoError(t, err)
		defer p.Close()
		all, err := Compile(insns)
		require.NoError(t, err)
		defer all.Close()
		want, err := m.Run(all, append([]byte(nil), ctx...))
		require.NoError(t, err)
		r0, err := m.Run(p, append([]byte(nil), ctx...))
		require.NoError(t, err)
		assert.Equal(t, want, r0, tc.between)
	}
}
