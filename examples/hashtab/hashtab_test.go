package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/object"
	"github.com/kflex-go/kflex/serve"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestHashtab builds bpf/hashtab.c with clang-19, serves it (JIT and
// interpreter executors) and runs the client against it.
func TestHashtab(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	src, err := os.ReadFile(filepath.Join("bpf", "hashtab.c"))
	require.NoError(t, err)
	obj, err := object.Open(testutil.BuildC(t, "hashtab", string(src)))
	require.NoError(t, err)
	assert.Equal(t, []string{"put", "get", "del"}, obj.Names())
	h, err := heap.CreateMemfd("hashtab", &heap.Options{Params: heap.Params{Size: 16 << 20}})
	require.NoError(t, err)
	defer h.Close()
	rt, err := serve.NewWith(h, nil, serve.Options{JIT: 2, Interpreted: 1, Objects: []*object.Object{obj}})
	require.NoError(t, err)
	defer rt.Close()
	socket := filepath.Join(t.TempDir(), "sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: socket, Net: "unixpacket"})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- rt.Serve(ln) }()
	defer func() {
		ln.Close()
		require.NoError(t, <-done)
	}()

	var out bytes.Buffer
	require.NoError(t, run(socket, 500, 4, &out), out.String())
	t.Log(out.String())
	assert.Contains(t, out.String(), "put 500 keys from 4 goroutines")
	assert.Contains(t, out.String(), "walked the table from Go under its locks: 500 entries in 64 buckets")
	assert.Contains(t, out.String(), "walked the table from Go under its locks: 250 entries in 64 buckets")
	assert.Contains(t, out.String(), "walked the table from Go under its locks: 0 entries in 64 buckets")
	out.Reset()
	require.NoError(t, run(socket, 500, 4, &out), "a second run against the same runtime: %s", out.String())
}
