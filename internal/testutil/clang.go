package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kflex-go/kflex/internal/hostprobe"
)

// BuildC compiles the C extension src with clang-19 for BPF (-O2 -target
// bpf -mcpu=v4, the module's include/ on the include path, and flags) into
// name in t's temporary directory, and returns the object's path. Without
// clang-19 the test skips, naming it (hostprobe.Clang, in make test's
// summary); a compile error fails the test.
func BuildC(t testing.TB, name, src string, flags ...string) string {
	t.Helper()
	Kernel(t, hostprobe.Clang, nil)
	dir := t.TempDir()
	c := filepath.Join(dir, name+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	obj := filepath.Join(dir, name+".o")
	args := append([]string{"-O2", "-target", "bpf", "-mcpu=v4", "-Wall", "-I", filepath.Join(ModuleRoot(t), "include")}, flags...)
	out, err := exec.Command(hostprobe.ClangName, append(args, "-c", c, "-o", obj)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", hostprobe.ClangName, name, err, out)
	}
	return obj
}

// ModuleRoot is the directory of kflex's go.mod, found upwards from the
// test's working directory (its package's directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}
