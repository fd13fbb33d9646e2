package serve_test

import (
	"path/filepath"
	"strings"
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

// TestLongNameRefused: a program whose name is longer than a client can send
// (wire.MaxNameLen, 64 bytes) is refused at load, naming the limit, rather
// than served where no client can invoke or cancel it.
func TestLongNameRefused(t *testing.T) {
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	defer h.Close()
	progs := programs(t)
	progs[strings.Repeat("a", 64)] = progs["empty"]
	rt, err := serve.NewWith(h, progs, serve.Options{Interpreted: 1})
	require.NoError(t, err, "64 bytes is a name a client can send")
	rt.Close()
	long := strings.Repeat("a", 100)
	progs[long] = progs["empty"]
	_, err = serve.NewWith(h, progs, serve.Options{Interpreted: 1})
	assert.ErrorContains(t, err, "serve: program "+long+": a name of 100 bytes, which no client could invoke: at most 64")
}
