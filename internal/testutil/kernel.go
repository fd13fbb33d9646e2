package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kflex-go/kflex/internal/hostprobe"
)

// FeatureLogEnv names a file to which every decision of Kernel is appended,
// one line per test: feature, "ran" or "skipped", the reason, the test. make
// test sets it and prints a summary of it (go run ./internal/hostprobe/summary), so a reader of
// CI output sees which rows of the product were exercised.
const FeatureLogEnv = "KFLEX_FEATURE_LOG"

// Kernel decides whether a test that needs host feature f runs. The host's
// answer decides, from a raw probe that runs no kflex code: where the host
// refuses, the test skips naming the call and the errno; where it offers, the
// test runs and kflex's own check (kflexCheck, may be nil) must pass: its
// failure is the test's failure, never a skip. So a kflex regression cannot
// hide as a skip.
func Kernel(t testing.TB, f *hostprobe.Feature, kflexCheck func() error) {
	t.Helper()
	if v := kernelVerdict(t, f, kflexCheck); v.skip {
		t.Skip(v.reason)
	}
}

// KernelPart is Kernel for a test that runs either way and leaves out only
// the part that needs f: it returns whether that part runs (logging why not).
func KernelPart(t testing.TB, f *hostprobe.Feature, kflexCheck func() error) bool {
	t.Helper()
	v := kernelVerdict(t, f, kflexCheck)
	if v.skip {
		t.Logf("without the part that needs it: %s", v.reason)
	}
	return !v.skip
}

// kernelVerdict decides, logs the decision and fails t where kflex fails.
func kernelVerdict(t testing.TB, f *hostprobe.Feature, kflexCheck func() error) verdict {
	t.Helper()
	hostErr := f.Offered()
	var kflexErr error
	if hostErr == nil && kflexCheck != nil {
		kflexErr = kflexCheck()
	}
	v := decide(f.Name, hostErr, kflexErr)
	logFeature(f.Name, v, t.Name())
	if v.fail {
		t.Fatal(v.reason)
	}
	return v
}

type verdict struct {
	skip, fail bool
	reason     string
}

// decide is Kernel's decision, apart from testing.TB so that it is tested
// on its own.
func decide(feature string, hostErr, kflexErr error) verdict {
	switch {
	case hostErr != nil:
		return verdict{skip: true, reason: hostErr.Error()}
	case kflexErr != nil:
		return verdict{fail: true, reason: fmt.Sprintf("the host offers %s, but kflex fails: %v", feature, kflexErr)}
	}
	return verdict{}
}

func logFeature(feature string, v verdict, test string) {
	path := os.Getenv(FeatureLogEnv)
	if path == "" || Role() != "" {
		return
	}
	outcome := "ran"
	if v.skip {
		outcome = "skipped"
	}
	reason := strings.ReplaceAll(v.reason, "\t", " ")
	pkg := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	line := fmt.Sprintf("%s\t%s\t%s\t%s.%s\n", feature, outcome, reason, pkg, test)
	// O_APPEND writes of one short line are atomic: test binaries of several
	// packages append to one file at once.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	f.WriteString(line)
	f.Close()
}
