package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/rseq"
)

// writeProg writes assembler text src to a new file name and returns its path.
func writeProg(t *testing.T, name, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(src), 0o600))
	return path
}

// TestRun: kflex run prints r0 and the time per run, on either engine, with
// the argument or data in the heap.
func TestRun(t *testing.T) {
	add1 := writeProg(t, "add1.s", "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit\n")
	for _, engine := range []string{"jit", "interp"} {
		code, stdout, stderr := kflex("run", "--engine", engine, add1, "--arg", "41")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stdout, add1+": r0 = 42 (0x2a)\n")
		assert.Regexp(t, `\n1 run on the `+engine+`: [0-9.]+[nµm]?s\n$`, stdout)
	}
	code, stdout, stderr := kflex("run", "--repeat", "50", add1, "--arg", "41")
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `50 runs on the jit: mean \S+, min \S+, p50 \S+, max \S+ per run`, stdout)

	code, stdout, stderr = kflex("run", "--json", "--repeat", "20", "--engine", "interp", "--arg", "1", add1)
	require.Equal(t, 0, code, stderr)
	assertSnakeCase(t, stdout)
	var rep runReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	assert.Equal(t, runReport{Program: add1, Engine: "interp", Runs: 20, R0: 2}, runReport{Program: rep.Program, Engine: rep.Engine, Runs: rep.Runs, R0: rep.R0})
	assert.Positive(t, rep.MinNs)
	assert.LessOrEqual(t, rep.MinNs, rep.P50Ns)
	assert.LessOrEqual(t, rep.P50Ns, rep.MaxNs)
	assert.LessOrEqual(t, float64(rep.MinNs), rep.MeanNs)
	assert.LessOrEqual(t, rep.MeanNs, float64(rep.MaxNs))

	// A negative r0 is shown signed too.
	neg := writeProg(t, "neg.s", "mov %r0, -130\nexit\n")
	code, stdout, _ = kflex("run", neg)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "r0 = 18446744073709551486 (0xffffffffffffff7e, -130)")
}

// TestRunTrace: what the program traces (kflex_trace) is printed, as kflex
// serve prints it, once per run.
func TestRunTrace(t *testing.T) {
	trace := writeProg(t, "trace.s", fmt.Sprintf("mov %%r1, 0x65\ncall %d\nmov %%r0, 0\nexit\n", abi.HelperTrace))
	code, stdout, stderr := kflex("run", "--repeat", "2", trace)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 2, strings.Count(stdout, "trace: 0x65\n"), stdout)
	code, stdout, stderr = kflex("run", "--json", trace)
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stdout, "trace:", "stdout holds only the JSON object")
}

// TestRunData: --ctx's bytes are in the heap at the argument, data_len is
// their length, and every run gets them as given.
func TestRunData(t *testing.T) {
	// The first byte plus the data's length; the byte incremented in place.
	first := writeProg(t, "first.s", "ldxb %r0, [%r3+0]\nldxdw %r2, [%r1+40]\nadd %r0, %r2\nexit\n")
	code, stdout, stderr := kflex("run", "--ctx", "2a0102", first)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "r0 = 45 (0x2d)")
	bump := writeProg(t, "bump.s", "ldxb %r0, [%r3+0]\nadd %r0, 1\nstxb [%r3+0], %r0\nexit\n")
	code, stdout, stderr = kflex("run", "--ctx", "0x05", "--repeat", "3", bump)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "r0 = 6 (0x6)", "the third run sees the data as given, not as the second left it")
}

// TestRunHeap: with --heap, runs change the heap file, and the next command
// sees what they left.
func TestRunHeap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 2 << 20}})
	require.NoError(t, err)
	off, err := h.Alloc(8)
	require.NoError(t, err)
	*h.Uint64(off) = 40
	require.NoError(t, h.Close())
	inc := writeProg(t, "inc.s", "ldxdw %r0, [%r3+0]\nadd %r0, 1\nstxdw [%r3+0], %r0\nexit\n")
	arg := strconv.FormatUint(off, 10)
	code, stdout, stderr := kflex("run", "--heap", path, "--arg", arg, "--repeat", "2", inc)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "r0 = 42 (0x2a)")
	code, stdout, stderr = kflex("run", inc, "--heap", path, "--arg", arg, "--engine", "interp")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "r0 = 43 (0x2b)", "the counter the first command left")
	code, stdout, stderr = kflex("heap", "check", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "1 live objects", "the runs' runtime freed what it allocated")
}

// TestRunFails: a rejected program is not run (the rejection as kflex verify
// prints it, exit 1); a run past its budget or faulting ends the command
// with exit 1, naming the run.
func TestRunFails(t *testing.T) {
	bad := writeProg(t, "bad.s", "mov %r6, %r10\nldxdw %r0, [%r6-8]\nexit\n")
	code, stdout, stderr := kflex("run", bad)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, bad+": rejected at instruction 1: invalid read from stack off -8 size 8: not all bytes written\n")
	assert.Contains(t, stdout, "  1: (79) r0 = *(u64 *)(r6 -8) ;")
	assert.Contains(t, stderr, "kflex: run: "+bad+" rejected: insn 1: invalid read from stack")

	spin := writeProg(t, "spin.s", "mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit\n")
	code, stdout, stderr = kflex("run", "--budget", "20ms", "--repeat", "3", spin)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "kflex: run "+spin+": run 1 of 3: program spin cancelled at instruction")
	assert.Contains(t, stderr, "its 20ms time budget ran out")

	misaligned := writeProg(t, "mis.s", "mov %r1, 1\nlock add [%r3+1], %r1\nmov %r0, 0\nexit\n")
	code, _, stderr = kflex("run", "--engine", "interp", misaligned)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "run 1 of 1: instruction 1: misaligned atomic access")
}

// TestRseqAreaOutOfReach: an extension cannot kill the runtime through its
// thread's rseq area. Where kflex registers the area (glibc's rseq off), a
// program that finds it through its queue node's slice-request pointer and
// points its rseq_cs at garbage got the process killed (SIGSEGV) at its
// next preemption; the area the kernel reads is now private memory, out of
// the program's reach, wherever the kernel offers no slice extension (which
// needs it in the heap).
func TestRseqAreaOutOfReach(t *testing.T) {
	if rseq.Probe().SliceExtension {
		t.Skip("skipped: with the slice extension the rseq area is in the heap (serve/rseqarea.go)")
	}
	prog := writeProg(t, "rseqcs.s", fmt.Sprintf(`ldxdw %%r2, [%%r1+%d]
	ldxdw %%r2, [%%r2+%d]
	mov %%r0, 1
	jeq %%r2, 0, out
	stdw [%%r2-20], 16
	mov %%r6, 0
loop:
	call %d
	add %%r6, 1
	jne %%r6, 2000000, loop
	mov %%r0, 0
out:
	exit
`, abi.CtxNode, mcs.NodeSliceReq, abi.HelperCPU))
	cmd := exec.Command(os.Args[0], "run", "--json", "--budget", "0", prog)
	cmd.Env = append(os.Environ(), "KFLEX_CLI=1", "GLIBC_TUNABLES=glibc.pthread.rseq=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	var rep runReport
	require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
	t.Logf("r0 %d (0: the program wrote the heap's area, 1: it found none)", rep.R0)
}
