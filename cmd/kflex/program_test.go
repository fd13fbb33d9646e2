package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/testutil"
)

// threeProgs is an object with three programs and a global.
const threeProgs = `#include "kflex.h"
kflex_u64 bias = 100;
KFLEX_PROG kflex_u64 first(const struct kflex_ctx *ctx) { return ctx->arg + 1; }
KFLEX_PROG kflex_u64 second(const struct kflex_ctx *ctx) { return ctx->arg + 2; }
KFLEX_PROG kflex_u64 third(const struct kflex_ctx *ctx) { return ctx->arg + bias; }
kflex_u64 runs;
KFLEX_PROG kflex_u64 count(const struct kflex_ctx *ctx) { return ++runs; }`

// TestProgramArguments: an ELF object's programs are chosen by name
// (OBJ:NAME); kflex verify wants one, kflex serve takes one, several or
// (OBJ) all; unknown names list those there are.
func TestProgramArguments(t *testing.T) {
	obj := testutil.BuildC(t, "three", threeProgs)
	dir := t.TempDir()
	raw := filepath.Join(dir, "add1.s")
	require.NoError(t, os.WriteFile(raw, []byte("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit\n"), 0o600))

	code, _, stderr := kflex("verify", obj)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, obj+" holds programs first, second, third, count: choose one with "+obj+":NAME")
	code, stdout, stderr := kflex("verify", obj+":third")
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, obj+":third: accepted")
	code, _, stderr = kflex("verify", obj+":fourth")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, obj+`: no program "fourth" (it has first, second, third, count)`)
	code, _, stderr = kflex("verify", raw+":first")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, raw+": not an ELF object, so it holds one program, unnamed (drop :first)")
	code, _, stderr = kflex("serve", "--socket", filepath.Join(dir, "never"), obj+":fourth")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, obj+`: no program "fourth" (it has first, second, third, count)`)

	cmd, out, c := startServe(t, filepath.Join(dir, "some"), obj+":first", raw, obj+":third")
	r0, err := c.Invoke("first", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)
	r0, err = c.Invoke("third", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(101), r0, "third reads its global")
	r0, err = c.Invoke("add1", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)
	_, err = c.Invoke("second", 1)
	assert.ErrorContains(t, err, `no program "second"`)
	bias, err := c.Global("bias", 8)
	require.NoError(t, err)
	*c.Uint64(bias) = 7
	r0, err = c.Invoke("third", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(8), r0, "the global is in the heap the client maps")
	c.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", out)

	cmd, out, c = startServe(t, filepath.Join(dir, "all"), obj)
	for name, want := range map[string]uint64{"first": 2, "second": 3, "third": 101, "count": 1} {
		r0, err := c.Invoke(name, 1)
		require.NoError(t, err, name)
		assert.Equal(t, want, r0, name)
	}
	c.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", out)
	assert.Contains(t, out.String(), "extensions [first second third count]")
}

// TestRunObject: kflex run runs one program of an object, its globals in
// the heap it runs on (they last across the runs), and leaves the heap
// whole.
func TestRunObject(t *testing.T) {
	obj := testutil.BuildC(t, "three", threeProgs)
	heapFile := filepath.Join(t.TempDir(), "heap")
	code, stdout, stderr := kflex("run", "--heap", heapFile, "--size", "4M", "--arg", "1", obj+":third")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "r0 = 101")
	code, stdout, stderr = kflex("run", "--heap", heapFile, "--repeat", "3", obj+":count")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "r0 = 3 ", "the global counts the runs")
	code, stdout, stderr = kflex("heap", "check", heapFile)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "ok")
	code, _, stderr = kflex("run", obj)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, obj+" holds programs first, second, third, count: choose one with "+obj+":NAME")
}
