// Package testutil holds what kflex's tests share: the TestMain that checks for
// leaked goroutines, re-executing the test binary as a child process, and the
// run-or-skip decision for tests that need a kernel feature (Kernel), made on
// the host's answer to a raw probe.
//
// Layer 0b (test plumbing): it imports only internal/hostprobe of kflex, and
// every layer's tests use it.
package testutil

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// childEnv marks a process started by Child: its value is the role the test
// function should play instead of its parent part.
const childEnv = "KFLEX_TEST_CHILD"

// Main is the TestMain of every kflex package: it runs the tests, then fails the
// run if any goroutine is left behind. Child processes skip the leak check: they
// are killed or exit on purpose.
func Main(m *testing.M, opts ...goleak.Option) {
	if Role() != "" {
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m, opts...)
}

// Role returns the role this process was started with by Child, or "" in the
// parent test process.
func Role() string { return os.Getenv(childEnv) }

// Child returns a command that re-runs the current test binary limited to the test
// named test, with role set so that the test plays the child's part. extraEnv
// entries ("K=V") are added to the environment. The caller starts and waits for it.
func Child(t testing.TB, test, role string, extraEnv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stderr = os.Stderr
	return cmd
}

// RequireRoot skips the test unless it runs as root, naming what needs it.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("requires root (for %s)", what)
	}
}

// EnvUint is the number a parent passed a child in environment variable key.
func EnvUint(t testing.TB, key string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(os.Getenv(key), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return v
}

// EnvUints is the comma-separated list of numbers in environment variable key.
func EnvUints(t testing.TB, key string) []uint64 {
	t.Helper()
	var vs []uint64
	for _, s := range strings.Split(os.Getenv(key), ",") {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		vs = append(vs, v)
	}
	return vs
}

// RandomBytes is n bytes from rng: the input of a generated-program test.
func RandomBytes(rng *rand.Rand, n int) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return data
}

// Alternate times runs side by side in one benchmark: each b.Loop round runs
// every function batch times in turn, so that the machine's drift reaches
// them all alike. It returns each function's nanoseconds per run.
func Alternate(b *testing.B, batch int, runs ...func()) []float64 {
	spent := make([]time.Duration, len(runs))
	for b.Loop() {
		for i, run := range runs {
			t0 := time.Now()
			for range batch {
				run()
			}
			spent[i] += time.Since(t0)
		}
	}
	ns := make([]float64, len(runs))
	for i, d := range spent {
		ns[i] = float64(d.Nanoseconds()) / float64(b.N*batch)
	}
	return ns
}

// Stopped reports whether process pid is stopped by a signal (state T in
// /proc/PID/stat): a child a test stopped at a chosen point.
func Stopped(t testing.TB, pid int) bool {
	t.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	// pid (comm) state ...: comm may hold anything but the last ')'.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] == "T"
}
