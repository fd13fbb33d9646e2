package hostprobe_test

import (
	"testing"

	"golang.org/x/sys/unix"

	. "github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestProbesAnswer: every probe returns nil, or for a kernel feature a
// Refusal naming its call and errno, for a host tool a Missing naming the
// program and how to install it, on whatever host this runs; what it said is
// logged.
func TestProbesAnswer(t *testing.T) {
	for _, f := range All {
		checkAnswer(t, f)
	}
}

// TestToolMissing: a host tool that is not on the PATH is a Missing (clang-19
// on a PATH without it).
func TestToolMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := Tool(ClangName, "apt-get install clang-19")
	checkAnswer(t, f)
	err := f.Offered()
	if _, ok := err.(*Missing); !ok {
		t.Fatalf("%s with an empty PATH: %T %v, want a *Missing", f.Name, err, err)
	}
	if got, want := err.Error(), "clang-19: clang-19 is not on the PATH (apt-get install clang-19)"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func checkAnswer(t *testing.T, f *Feature) {
	t.Helper()
	err := f.Offered()
	t.Logf("%s (%s): %v", f.Name, f.What, err)
	if err == nil {
		return
	}
	switch e := err.(type) {
	case *Refusal:
		if f.What != "kernel feature" || e.Feature != f.Name || e.Call == "" || e.Errno == 0 {
			t.Fatalf("%s (%s): incomplete or misplaced refusal %+v", f.Name, f.What, e)
		}
	case *Missing:
		if f.What != "host tool" || e.Feature != f.Name || e.Program == "" || e.Install == "" {
			t.Fatalf("%s (%s): incomplete or misplaced missing tool %+v", f.Name, f.What, e)
		}
	default:
		t.Fatalf("%s (%s): %T %v, want a *Refusal (kernel feature) or a *Missing (host tool)", f.Name, f.What, err, err)
	}
}

func TestRefusalText(t *testing.T) {
	r := &Refusal{Feature: "BPF arena", Call: "BPF_MAP_CREATE(ARENA)", Errno: unix.EINVAL}
	if got, want := r.Error(), "BPF arena: the kernel refuses BPF_MAP_CREATE(ARENA): EINVAL"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
