package loader_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/verifier"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestLoad: one validation gives a program both engines run, the JIT with
// the verifier's guards; a rejection is the verifier's error.
func TestLoad(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	insns, err := bytecode.Assemble("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit")
	require.NoError(t, err)
	before := bytecode.Validations()
	p, err := loader.Load(insns, loader.Options{JIT: true, Interp: true})
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, uint64(1), bytecode.Validations()-before, "validations")
	kept, elided := p.JIT.Guards()
	assert.Equal(t, [2]int{0, 1}, [2]int{kept, elided}, "the context read needs no guard")
	ctx := abi.Context{Arg: 41}.Bytes()
	m, err := jit.NewMachine(jit.MinSandbox)
	require.NoError(t, err)
	defer m.Close()
	r0, err := m.Run(p.JIT, ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), r0, "jit")
	r0, err = interp.NewMachine().Run(p.Interp, ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), r0, "interp")

	bad, err := bytecode.Assemble("ldxdw %r0, [%r1+48]\nexit")
	require.NoError(t, err)
	_, err = loader.Load(bad, loader.Options{JIT: true})
	assert.ErrorIs(t, err, verifier.ErrRejected, "outside the runtime's context")
	cfg := verifier.Config{CtxSize: 56}
	_, err = loader.Load(bad, loader.Options{Config: &cfg})
	assert.NoError(t, err, "inside a context of 56 bytes")
}

// TestConfigIsABI: the runtime's verifier configuration says what abi says.
func TestConfigIsABI(t *testing.T) {
	cfg := loader.Config()
	assert.Equal(t, abi.CtxSize, cfg.CtxSize)
	assert.Len(t, cfg.CtxFields, len(abi.CtxFields))
	assert.Equal(t, abi.LockFunc, cfg.LockFunc)
	assert.Equal(t, abi.UnlockFunc, cfg.UnlockFunc)
	for id, p := range abi.Prototypes() {
		h := cfg.Helpers[id]
		assert.Equal(t, p.Name, h.Name)
		assert.Equal(t, len(p.Args), h.Args, p.Name)
		assert.Equal(t, p.Ret == abi.RetHeapOrNull, h.HeapOrNull, p.Name)
	}
	assert.Equal(t, verifier.ParamNumber, cfg.Helpers[abi.HelperAlloc].Params[0])
}
