package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/kflex-go/kflex"

// layers is kflex's one table of layers, bottom to top: a package may import
// only kflex packages of a layer listed before its own. Paths are relative to
// the module; "dir/..." is dir and every package below it. An entry with no
// package yet is a planned one. Layer 0 is in two parts: the arena mapping is
// built on the address-space reservations, and the test plumbing on the host
// probes.
var layers = []layer{
	// 0: system plumbing and the executor ABI: shared futexes, address-space
	// reservations, the socket wire format; the helper numbers, context layout
	// and cancellation word every executor shares; the raw probes that ask the
	// host for kernel features.
	{"0a", []string{"internal/sys/futex", "internal/sys/vm", "internal/sys/wire", "abi", "internal/hostprobe"}},
	// BPF arena mappings, on vm's reservations; test plumbing, on the probes.
	{"0b", []string{"internal/sys/arena", "internal/testutil"}},
	// 1: the heap, pointer translation and rseq time slices; the bytecode
	// format (decoding, validation, the assembler).
	{"1", []string{"heap", "translate", "rseq", "bytecode"}},
	// 2: the lock on the heap; the verifier on the bytecode; ELF objects
	// read into bytecode.
	{"2", []string{"mcs", "verifier", "object"}},
	// 3: what applications link; the engines' parts (code generator,
	// interpreter).
	{"3", []string{"userspace", "jit/amd64", "jit/interp"}},
	// 4: the JIT, which falls back to the interpreter.
	{"4", []string{"jit"}},
	// 5: running a program safely: one pipeline (verify, guards, compile);
	// cancellation tables and the watchdog (planned).
	{"5", []string{"loader", "cancel"}},
	// 6: the runtime and the kernel oracle.
	{"6", []string{"serve", "kernel"}},
	// 7: program harnesses for tests and benchmarks: only the harnesses
	// above, tests and cmd import them.
	{"7", []string{"internal/isatest", "internal/progen", "internal/benchprog"}},
	// 8: harnesses over the whole runtime: measurements, stress runs,
	// programs users copy (examples/: Go clients of C extensions), this test.
	{"8", []string{"bench", "stress/...", "examples/...", "internal/layers"}},
	// 9: the commands, make test's summary of the host's features, and the
	// /init of make test-kernel's VM.
	{"9", []string{"cmd/...", "internal/hostprobe/summary", "internal/vmtest/..."}},
}

type layer struct {
	rank string
	pkgs []string
}

// appTop is the top layer of the application stack.
const appTop = "3"

// engines are the packages below layer 4 that are not part of the application
// stack: the bytecode and the BPF engines, built on cilium/ebpf's instructions.
var engines = []string{"bytecode", "verifier", "object", "jit/..."}

// matches reports whether rel is entry or, for "dir/...", below it.
func matches(rel, entry string) bool {
	if dir, ok := strings.CutSuffix(entry, "/..."); ok {
		return rel == dir || strings.HasPrefix(rel, dir+"/")
	}
	return rel == entry
}

// rankOf is the index of rel's layer in layers, or false if it is in none.
func rankOf(rel string) (int, bool) {
	for i, l := range layers {
		for _, e := range l.pkgs {
			if matches(rel, e) {
				return i, true
			}
		}
	}
	return 0, false
}

// appStack reports whether rel is in the application stack: layers 0 to 3
// without the engines. It must not need cilium/ebpf or an engine, so that an
// application that wants a heap and a lock does not link a JIT, a verifier or
// a BPF loader.
func appStack(rel string) bool {
	rank, ok := rankOf(rel)
	if !ok || rank > slices.IndexFunc(layers, func(l layer) bool { return l.rank == appTop }) {
		return false
	}
	for _, e := range engines {
		if matches(rel, e) {
			return false
		}
	}
	return true
}

// relative is path within the module, or false if it is not a kflex package.
func relative(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	return strings.CutPrefix(path, module+"/")
}

// appForbidden reports whether the application stack must not import path:
// cilium/ebpf (the engines' instructions) or Prometheus's client (the
// runtime's metrics).
func appForbidden(path string) bool {
	for _, mod := range []string{"github.com/cilium/ebpf", "github.com/prometheus"} {
		if path == mod || strings.HasPrefix(path, mod+"/") {
			return true
		}
	}
	return false
}

// Package is what go list -json says of a package: its non-test imports.
type Package struct {
	ImportPath string
	Imports    []string
}

// check returns every breach of the layers in pkgs, one line each.
func check(pkgs []Package) []string {
	var errs []string
	for _, p := range pkgs {
		rel, ok := relative(p.ImportPath)
		if !ok {
			continue
		}
		rank, ok := rankOf(rel)
		if !ok {
			errs = append(errs, fmt.Sprintf("%s is in no layer: put it in a layer (internal/layers/layers_test.go and README.md)", rel))
			continue
		}
		for _, imp := range p.Imports {
			if appForbidden(imp) && appStack(rel) {
				errs = append(errs, fmt.Sprintf("%s (application stack) imports %s", rel, imp))
				continue
			}
			dep, ok := relative(imp)
			if !ok {
				continue
			}
			drank, ok := rankOf(dep)
			switch {
			case !ok: // reported as a package of its own
			case drank >= rank:
				errs = append(errs, fmt.Sprintf("%s (rank %s) imports %s (rank %s)", rel, layers[rank].rank, dep, layers[drank].rank))
			case appStack(rel) && !appStack(dep):
				errs = append(errs, fmt.Sprintf("%s (application stack) imports %s (an engine)", rel, dep))
			}
		}
	}
	return errs
}

// TestCheckFindsBreaches plants each kind of breach in a made-up graph.
func TestCheckFindsBreaches(t *testing.T) {
	kflex := func(rel string) string { return module + "/" + rel }
	graph := []Package{
		{kflex("heap"), []string{kflex("internal/sys/vm"), kflex("serve"), "golang.org/x/sys/unix"}},
		{kflex("userspace"), []string{kflex("mcs"), "github.com/cilium/ebpf/asm"}},
		{kflex("heap"), []string{"github.com/prometheus/client_golang/prometheus"}},
		{kflex("serve"), []string{"github.com/prometheus/client_golang/prometheus"}},
		{kflex("internal/sys/vm"), []string{kflex("internal/sys/arena")}},
		{kflex("internal/sys/arena"), []string{kflex("internal/sys/vm")}},
		{kflex("mcs"), []string{kflex("heap"), kflex("bytecode")}},
		{kflex("jit/interp"), []string{kflex("jit/amd64"), kflex("bytecode"), "github.com/cilium/ebpf/asm"}},
		{kflex("verifier"), []string{kflex("bytecode"), "github.com/cilium/ebpf/asm"}},
		{kflex("bench"), []string{kflex("internal/benchprog"), kflex("kernel")}},
		{kflex("cmd/kflex"), []string{kflex("bench"), "github.com/cilium/ebpf"}},
		{kflex("newpkg"), []string{kflex("heap")}},
		{kflex("examples/counter"), []string{kflex("userspace")}},
		{"example.com/other", []string{kflex("serve")}},
	}
	assert.ElementsMatch(t, []string{
		"heap (rank 1) imports serve (rank 6)",
		"userspace (application stack) imports github.com/cilium/ebpf/asm",
		"heap (application stack) imports github.com/prometheus/client_golang/prometheus",
		"internal/sys/vm (rank 0a) imports internal/sys/arena (rank 0b)",
		"mcs (application stack) imports bytecode (an engine)",
		"jit/interp (rank 3) imports jit/amd64 (rank 3)",
		"newpkg is in no layer: put it in a layer (internal/layers/layers_test.go and README.md)",
	}, check(graph))
}

// TestTable: every entry is in one layer.
func TestTable(t *testing.T) {
	seen := map[string]string{}
	for _, l := range layers {
		for _, e := range l.pkgs {
			if r, ok := seen[e]; ok {
				t.Errorf("%s is in layers %s and %s", e, r, l.rank)
			}
			seen[e] = l.rank
		}
	}
	r, ok := rankOf("cmd/kflex")
	assert.True(t, ok && r == len(layers)-1, "cmd is on top")
	assert.True(t, appStack("internal/sys/arena") && appStack("userspace"))
	assert.False(t, appStack("jit/interp") || appStack("verifier") || appStack("serve"))
}

// TestLayers checks kflex's real import graph (non-test imports, for this
// GOOS and GOARCH, default build tags).
func TestLayers(t *testing.T) {
	pkgs := list(t)
	for _, e := range check(pkgs) {
		t.Error(e)
	}
	have := map[string]bool{}
	for _, p := range pkgs {
		if rel, ok := relative(p.ImportPath); ok {
			have[rel] = true
		}
	}
	for _, l := range layers {
		for _, e := range l.pkgs {
			found := false
			for rel := range have {
				found = found || matches(rel, e)
			}
			if !found {
				t.Logf("planned: %s (no package yet)", e)
			}
		}
	}
}

// list runs go list on every package of the module.
func list(t *testing.T) []Package {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "the layering test runs go list")
	cmd := exec.Command(goCmd, "list", "-json=ImportPath,Imports", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "go list: %s", stderr.String())
	var pkgs []Package
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		pkgs = append(pkgs, p)
	}
	require.NotEmpty(t, pkgs)
	return pkgs
}
