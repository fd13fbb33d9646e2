package testutil

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/hostprobe"
)

func TestMain(m *testing.M) { Main(m) }

// fakeTB records what Kernel decided; Fatal and Skip end the calling
// goroutine as testing's do.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Name() string { return "TestFake" }
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, args[0].(string)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, args[0].(string)
	runtime.Goexit()
}

func runKernel(f *hostprobe.Feature, check func() error) *fakeTB {
	tb := &fakeTB{}
	var wg sync.WaitGroup
	wg.Go(func() { Kernel(tb, f, check) })
	wg.Wait()
	return tb
}

// TestKernelDecision: the host's answer decides between skip and run, and
// where the host offers a feature, kflex's failing check fails the test: a
// fake probe that says "offered" while kflex's call fails must fail.
func TestKernelDecision(t *testing.T) {
	log := filepath.Join(t.TempDir(), "features")
	t.Setenv(FeatureLogEnv, log)
	offered := hostprobe.New("fake offered", func() error { return nil })
	refused := hostprobe.New("fake refused", func() error {
		return &hostprobe.Refusal{Call: "BPF_MAP_CREATE(ARENA)", Errno: unix.EPERM}
	})
	kflexFails := func() error { return errors.New("create arena: planted failure") }
	kflexWorks := func() error { return nil }

	tb := runKernel(offered, kflexFails)
	if !tb.failed || tb.skipped || !strings.Contains(tb.msg, "planted failure") {
		t.Fatalf("offered host, failing kflex: failed=%v skipped=%v %q; want a failure naming kflex's error", tb.failed, tb.skipped, tb.msg)
	}
	if tb := runKernel(offered, kflexWorks); tb.failed || tb.skipped {
		t.Fatalf("offered host, working kflex: failed=%v skipped=%v %q; want the test to run", tb.failed, tb.skipped, tb.msg)
	}
	if tb := runKernel(offered, nil); tb.failed || tb.skipped {
		t.Fatalf("offered host, no kflex check: failed=%v skipped=%v; want the test to run", tb.failed, tb.skipped)
	}
	called := false
	tb = runKernel(refused, func() error { called = true; return nil })
	want := "fake refused: the kernel refuses BPF_MAP_CREATE(ARENA): EPERM"
	if !tb.skipped || tb.failed || !strings.HasPrefix(tb.msg, want) || called {
		t.Fatalf("refused host: skipped=%v failed=%v %q kflex called=%v; want a skip %q without calling kflex", tb.skipped, tb.failed, tb.msg, called, want)
	}

	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "fake offered\tran\t") ||
		!strings.HasPrefix(lines[3], "fake refused\tskipped\t"+want) {
		t.Fatalf("feature log:\n%s", data)
	}
}
