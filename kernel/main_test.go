package kernel

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
)

const roleProbe = "kernel-probe"

// kernelHung is set when a probe load did not return: the kernel's BPF JIT
// allocator is deadlocked (seen on 6.18 after a burst of ~10^5 program loads
// and frees: every system_wq worker blocked in bpf_prog_pack_free behind a
// task that waits for vmalloc purge work which no worker is left to run). A
// load in this process would then hang it, unkillably, and go test with it.
var kernelHung error

// probeTimeout is far above a healthy probe (a few milliseconds).
const probeTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	switch testutil.Role() {
	case roleProbe:
		if err := hostprobe.Programs.Offered(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	case "":
		kernelHung = probeInChild()
	}
	testutil.Main(m)
}

// probeInChild runs the host's probe, the first BPF load, in a child process, which is abandoned
// (not waited for, holding none of our pipes) if it does not finish.
func probeInChild() error {
	if os.Geteuid() != 0 {
		return nil // the host refuses loads: nothing can hang
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KFLEX_TEST_CHILD="+roleProbe)
	if err := cmd.Start(); err != nil {
		return nil
	}
	deadline := time.Now().Add(probeTimeout)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(cmd.Process.Pid, &ws, unix.WNOHANG, nil)
		if err != nil || pid == cmd.Process.Pid {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Process.Release()
	return fmt.Errorf("a BPF program load did not return within %v: the kernel's BPF subsystem is wedged "+
		"(see dmesg for hung tasks in bpf_prog_pack_alloc/free); reboot the machine", probeTimeout)
}

// requireKernel skips t where the host refuses BPF program loads and test
// runs; where it offers them, kflex's loads must work.
func requireKernel(t testing.TB) {
	t.Helper()
	if kernelHung != nil {
		t.Skipf("skipped: %v", kernelHung)
	}
	testutil.Kernel(t, hostprobe.Programs, Supported)
}

// requireArena is requireKernel for BPF arenas too.
func requireArena(t testing.TB) {
	t.Helper()
	requireKernel(t)
	testutil.Kernel(t, hostprobe.Arena, HaveArena)
}
