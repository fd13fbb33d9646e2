package hostprobe_test

import (
	"testing"

	"golang.org/x/sys/unix"

	. "github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestProbesAnswer: every probe returns nil or a Refusal naming its call and
// errno, on whatever host this runs; what it said is logged.
func TestProbesAnswer(t *testing.T) {
	for _, f := range All {
		err := f.Offered()
		t.Logf("%s: %v", f.Name, err)
		if err == nil {
			continue
		}
		r, ok := err.(*Refusal)
		if !ok {
			t.Fatalf("%s: %T %v, want a *Refusal", f.Name, err, err)
		}
		if r.Feature != f.Name || r.Call == "" || r.Errno == 0 {
			t.Fatalf("%s: incomplete refusal %+v", f.Name, r)
		}
	}
}

func TestRefusalText(t *testing.T) {
	r := &Refusal{Feature: "BPF arena", Call: "BPF_MAP_CREATE(ARENA)", Errno: unix.EINVAL}
	if got, want := r.Error(), "BPF arena: the kernel refuses BPF_MAP_CREATE(ARENA): EINVAL"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
