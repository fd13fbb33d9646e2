package serve_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/serve"
)

// TestValidatedOnce: loading programs into a runtime with both engines
// validates each program once; the verifier, the JIT and the interpreter
// share the one validated form.
func TestValidatedOnce(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	defer h.Close()
	progs := programs(t)
	before := bytecode.Validations()
	rt, err := serve.NewWith(h, progs, serve.Options{JIT: 1, Interpreted: 1})
	require.NoError(t, err)
	defer rt.Close()
	assert.Equal(t, uint64(len(progs)), bytecode.Validations()-before, "validations of %d programs", len(progs))
}
