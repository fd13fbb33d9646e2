package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// TestMain lets the test binary stand in for kflex when the demo re-executes
// itself as a worker, and the recovery bench as a lock holder.
func TestMain(m *testing.M) {
	if (len(os.Args) > 1 && (os.Args[1] == "demo-worker" || os.Args[1] == "bench-holder")) || os.Getenv("KFLEX_CLI") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	testutil.Main(m)
}

func kflex(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsage(t *testing.T) {
	code, _, stderr := kflex()
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "usage: kflex <command>")
	code, stdout, _ := kflex("help")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "heap ")
	assert.Contains(t, stdout, "demo ")
	assert.NotContains(t, stdout, "demo-worker")
	code, _, stderr = kflex("frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `unknown command "frobnicate"`)
	code, stdout, _ = kflex("help", "demo")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "usage: kflex demo")
	code, _, stderr = kflex("heap", "shrink")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `unknown subcommand "shrink"`)
}

func TestHeapCreateInfo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h")
	code, stdout, stderr := kflex("heap", "create", "--size", "2M", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "created "+path+": 2 MiB")

	code, stdout, stderr = kflex("heap", "info", path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "size 2 MiB (2^21)")
	assert.Contains(t, stdout, "attached processes: 0")

	code, stdout, _ = kflex("heap", "info", "--json", path)
	require.Equal(t, 0, code)
	assertSnakeCase(t, stdout)
	var in info
	require.NoError(t, json.Unmarshal([]byte(stdout), &in))
	assert.Equal(t, uint64(2<<20), in.Size)
	assert.Equal(t, in.Alloc.Pages, in.Alloc.FreePages)
	for _, list := range []string{"owners", "alloc_locks", "alloc_caches", "queued_nodes", "queued_locks"} {
		assert.Contains(t, stdout, `"`+list+`": [`, "an empty list is [], not null: jq's .%s[] works", list)
	}

	code, _, stderr = kflex("heap", "create", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "heap "+path+": open")
	assert.Contains(t, stderr, "file exists")
}

func TestHeapBadInput(t *testing.T) {
	dir := t.TempDir()
	notHeap := filepath.Join(dir, "passwd")
	require.NoError(t, os.WriteFile(notHeap, bytes.Repeat([]byte{1}, 8192), 0o600))
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"heap", "create", "--size", "3M", filepath.Join(dir, "a")}, 2, "--size 3M: want a power of two from 1M to 64G"},
		{[]string{"heap", "create", "--size", "512K", filepath.Join(dir, "a")}, 2, "--size 512K: want a power of two from 1M to 64G"},
		{[]string{"heap", "create", "--size", "128G", filepath.Join(dir, "a")}, 2, "--size 128G: want a power of two from 1M to 64G"},
		{[]string{"heap", "create", "--size", "lots", filepath.Join(dir, "a")}, 2, `invalid value "lots" for flag -size: want a number of bytes`},
		{[]string{"heap", "create", "--size", "0", filepath.Join(dir, "a")}, 2, `invalid value "0" for flag -size`},
		{[]string{"heap", "create", "--size", "-5M", filepath.Join(dir, "a")}, 2, `invalid value "-5M" for flag -size`},
		{[]string{"heap", "create"}, 2, "want 1 argument(s), got 0"},
		{[]string{"heap", "create", "--bogus", "x"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"heap", "info", notHeap}, 1, "heap " + notHeap + ": not a kflex heap (bad magic)"},
		{[]string{"heap", "info", filepath.Join(dir, "missing")}, 1, "no such file or directory"},
		{[]string{"heap"}, 2, "missing subcommand"},
	} {
		code, _, stderr := kflex(tc.args...)
		assert.Equal(t, tc.code, code, "%v: %s", tc.args, stderr)
		assert.Contains(t, stderr, tc.msg, "%v", tc.args)
	}
	_, err := os.Stat(filepath.Join(dir, "a"))
	assert.ErrorIs(t, err, os.ErrNotExist, "a failed create leaves no file")
}

func TestDemo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.heap")
	code, stdout, stderr := kflex("demo", "--heap", path)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.Contains(t, stdout, "counter 400000 (expected 400000)")
	assert.Contains(t, stdout, "list: 400 entries walked from this view (expected 400)")
	assert.Contains(t, stdout, "kernel marked it dead")
	assert.NotContains(t, stdout, "MISMATCH")
	// The kept heap shows the dead victim in its owner table.
	code, stdout, _ = kflex("heap", "info", path)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "DEAD (reported by the kernel)")
	code, stdout, _ = kflex("heap", "info", path, "--json")
	require.Equal(t, 0, code)
	assertSnakeCase(t, stdout)
	var in info
	require.NoError(t, json.Unmarshal([]byte(stdout), &in))
	require.NotEmpty(t, in.Owners)
	assert.True(t, in.Owners[len(in.Owners)-1].Dead, "the victim, in the owner table: %s", stdout)
}

func TestRseqCheck(t *testing.T) {
	code, stdout, stderr := kflex("rseq-check", "--duration", "50ms")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "rseq system call:")
	assert.Contains(t, stdout, "slice extension:")
	assert.Contains(t, stdout, "this thread:")
	if !strings.Contains(stdout, "slice extension:         yes") {
		assert.Contains(t, stdout, "test: not run")
	} else {
		assert.Contains(t, stdout, "extended and yielded")
	}
	code, _, stderr = kflex("rseq-check", "--duration", "forever")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "invalid value")
}

func TestJITDisasm(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "p.s")
	require.NoError(t, os.WriteFile(text, []byte("mov %r0, 7\nexit\n"), 0o600))
	code, stdout, stderr := kflex("jit", "--disasm", text)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "  0: (b7) r0 = 7\n", "the kernel's instruction text, as kflex verify logs it")
	assert.Contains(t, stdout, "  1: (95) exit\n")
	assert.Contains(t, stdout, "mov eax, 0x7")
	assert.Contains(t, stdout, "exits and the shared exit path")

	raw := filepath.Join(dir, "p.bin")
	require.NoError(t, os.WriteFile(raw, []byte{0xb7, 0, 0, 0, 7, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}, 0o600))
	code, stdout2, _ := kflex("jit", "--disasm", raw)
	require.Equal(t, 0, code)
	assert.Equal(t, stdout, stdout2, "raw bytecode and its text give the same listing")

	bad := filepath.Join(dir, "bad.s")
	require.NoError(t, os.WriteFile(bad, []byte("mov %r0, 1\n"), 0o600))
	code, _, stderr = kflex("jit", "--disasm", bad)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "instruction 0: MovImm: last instruction falls off the end")
	fake := filepath.Join(dir, "fake.o")
	require.NoError(t, os.WriteFile(fake, []byte("\x7fELF junk"), 0o600))
	code, _, stderr = kflex("jit", "--disasm", fake)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, fake+": not an ELF object")
	code, _, stderr = kflex("jit")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "want 1 argument(s)")
}

// benchResult is kflex bench --json's object.
type benchResult struct {
	Suite string           `json:"suite"`
	Rows  []map[string]any `json:"rows"`
}

// row is the row named name, or nil.
func (b benchResult) row(name string) map[string]any {
	for _, r := range b.Rows {
		if r["name"] == name {
			return r
		}
	}
	return nil
}

// TestBench: kflex bench prints a table with a row per program (waiter),
// and with --json one object with the suite, its rows and the figures of no
// row, under snake_case keys.
func TestBench(t *testing.T) {
	code, stdout, stderr := kflex("bench", "--json", "--time", "5ms", "jit")
	require.Equal(t, 0, code, stderr)
	var res benchResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assertSnakeCase(t, stdout)
	assert.Equal(t, "jit", res.Suite)
	// Where the host offers arenas the programs also run in the kernel, and
	// a row "empty" measures the entry cost of both sides.
	rows := len(benchprog.Corpus)
	if testutil.KernelPart(t, hostprobe.Arena, kernel.HaveArena) {
		rows++
		require.NotNil(t, res.row("empty"), stdout)
		assert.Greater(t, res.row("empty")["kernel_ns"], 0.0)
		assert.Greater(t, res.row("loop")["jit_vs_kernel"], 0.0)
	}
	require.Len(t, res.Rows, rows)
	for _, r := range res.Rows {
		if r["name"] == "empty" {
			continue
		}
		for _, k := range []string{"jit_ns", "jit_perfmode_ns", "jit_unguarded_ns", "interp_ns", "insns", "speedup"} {
			assert.Greater(t, r[k], 0.0, "%v %s", r["name"], k)
		}
		assert.Contains(t, r, "guard_overhead_pct")
	}
	require.NotNil(t, res.row("loop"))
	assert.Greater(t, res.row("loop")["speedup"], 1.0, "the JIT beats the interpreter")
	assert.Equal(t, 7004.0, res.row("loop")["insns"])

	code, stdout, stderr = kflex("bench", "jit", "--time", "5ms")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	require.Len(t, lines, 1+rows, stdout)
	header := strings.Fields(lines[0])
	for _, c := range []string{"guard_overhead_pct", "insns", "interp_ns", "jit_ns", "jit_perfmode_ns", "jit_unguarded_ns", "speedup"} {
		assert.Contains(t, header, c, "a column per figure")
	}
	var loop []string
	for _, l := range lines[1:] {
		if f := strings.Fields(l); f[0] == "loop" {
			loop = f
		}
	}
	require.Len(t, loop, 1+len(header), "a row per program, by name, a cell per column: %s", stdout)
	assert.Equal(t, "7004", loop[1+slices.Index(header, "insns")], "the loop's instructions, in the insns column")
	assert.NotContains(t, stdout, "loop.jit_ns", "no flat key list")

	code, _, stderr = kflex("bench", "locks")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `unknown suite "locks"`)

	code, stdout, stderr = kflex("bench", "--json", "--rounds", "2000", "lock")
	require.Equal(t, 0, code, stderr)
	var figures map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &figures))
	assertSnakeCase(t, stdout)
	for _, k := range []string{"handoff_ns", "extension_lock_unlock_ns", "invoke_us"} {
		assert.Greater(t, figures[k], 0.0, k)
	}

	code, stdout, stderr = kflex("bench", "--kills", "5", "--robust", filepath.Join(t.TempDir(), "none"), "recovery", "--json")
	require.Equal(t, 0, code, stderr)
	res = benchResult{}
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	assertSnakeCase(t, stdout)
	for _, w := range []string{"go", "jit"} {
		require.NotNil(t, res.row(w), w)
		assert.Greater(t, res.row(w)["p50_us"], 0.0, w)
		assert.GreaterOrEqual(t, res.row(w)["p99_us"], res.row(w)["p50_us"], w)
	}
	assert.Contains(t, stdout, `"kills": 5`)
}

// TestServe runs "kflex serve" as a process, attaches to it, invokes an
// extension, and stops it with SIGTERM.
func TestServe(t *testing.T) {
	t.Run("memfd", func(t *testing.T) { testServe(t) })
	t.Run("arena", func(t *testing.T) {
		testutil.Kernel(t, hostprobe.Arena, kernel.HaveArena)
		testServe(t, "--arena")
	})
	code, _, stderr := kflex("serve", "--socket", "s", "--arena", "--heap", "h", "p.s")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--heap and --arena exclude each other")
	t.Run("arena refused", func(t *testing.T) {
		// Where the host refuses arenas, the user reads kflex's word for it,
		// not cilium/ebpf's advice to raise RLIMIT_MEMLOCK.
		refusal := hostprobe.Arena.Offered()
		if refusal == nil {
			t.Skip("the host offers BPF arenas: no refusal to report (the arena subtest runs instead)")
		}
		prog := filepath.Join(t.TempDir(), "p.s")
		require.NoError(t, os.WriteFile(prog, []byte("mov %r0, 0\nexit\n"), 0o600))
		code, _, stderr := kflex("serve", "--socket", filepath.Join(t.TempDir(), "s"), "--arena", prog)
		assert.Equal(t, 1, code)
		var r *hostprobe.Refusal
		require.ErrorAs(t, refusal, &r)
		assert.Contains(t, stderr, "the kernel refuses BPF_MAP_CREATE(ARENA): "+unix.ErrnoName(r.Errno))
		assert.NotContains(t, stderr, "RemoveMemlock")
	})
	t.Run("arena too large", func(t *testing.T) {
		testutil.Kernel(t, hostprobe.Arena, kernel.HaveArena)
		prog := filepath.Join(t.TempDir(), "p.s")
		require.NoError(t, os.WriteFile(prog, []byte("mov %r0, 0\nexit\n"), 0o600))
		code, _, stderr := kflex("serve", "--socket", filepath.Join(t.TempDir(), "s"), "--arena", "--size", "8G", prog)
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "arena size 8589934592: want a power of two from 4096 to 4294967296")
	})
}

func testServe(t *testing.T, flags ...string) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "add1.s")
	require.NoError(t, os.WriteFile(prog, []byte("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit\n"), 0o600))
	sock := filepath.Join(dir, "sock")
	cmd, out, c := startServe(t, sock, append(flags, prog)...)
	r0, err := c.Invoke("add1", 41)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), r0)
	_, err = c.Invoke("nope", 0)
	var ie *userspace.InvokeError
	assert.ErrorAs(t, err, &ie)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", out)
	assert.Contains(t, out.String(), "extensions [add1]")
	_, err = c.Invoke("add1", 1)
	assert.ErrorIs(t, err, userspace.ErrRuntimeGone)
	c.Close()
	code, _, stderr := kflex("serve", prog)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "need --socket")
}

// startServe runs "kflex serve" on socket with a 16M heap, one executor and
// args, as a process, and attaches to it once it listens.
func startServe(t *testing.T, socket string, args ...string) (*exec.Cmd, *syncBuffer, *userspace.Client) {
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--socket", socket, "--size", "16M", "--threads", "1"}, args...)...)
	cmd.Env = append(os.Environ(), "KFLEX_CLI=1")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	var c *userspace.Client
	require.Eventually(t, func() bool {
		var err error
		c, err = userspace.Dial(socket, nil)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "runtime never listened: %s", out)
	return cmd, out, c
}

// TestServeStaleSocket: "kflex serve" replaces the socket a SIGKILLed runtime
// left behind, and refuses a socket a live runtime serves on and a file that
// is not a socket.
func TestServeStaleSocket(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "add1.s")
	require.NoError(t, os.WriteFile(prog, []byte("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit\n"), 0o600))
	sock := filepath.Join(dir, "sock")
	killed, _, c := startServe(t, sock, prog)
	c.Close()
	require.NoError(t, killed.Process.Kill())
	killed.Wait()
	_, err := os.Stat(sock)
	require.NoError(t, err, "a killed runtime leaves its socket")

	cmd, out, c := startServe(t, sock, prog)
	defer c.Close()
	assert.Contains(t, out.String(), `level=WARN msg="replaced a stale socket: no runtime answered on it" socket=`+sock)
	r0, err := c.Invoke("add1", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)

	newHeap := filepath.Join(dir, "heap")
	code, _, stderr := kflex("serve", "--socket", sock, "--size", "16M", "--heap", newHeap, "--every", "add1@1ms", prog)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "a kflex runtime is already serving at "+sock)
	assert.NotContains(t, stderr, "closing", "refused before a runtime was made (and its timer ran)")
	_, err = os.Stat(newHeap)
	assert.ErrorIs(t, err, os.ErrNotExist, "refused before the heap was created")
	code, _, stderr = kflex("serve", "--socket", prog, "--size", "16M", prog)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "listen on "+prog+": not a socket")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", out)
	_, err = os.Stat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "a runtime that stops removes its socket")
	r0, err = c.Invoke("add1", 1)
	assert.ErrorIs(t, err, userspace.ErrRuntimeGone, "got %d", r0)
}

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.s")
	require.NoError(t, os.WriteFile(good, []byte("stdw [%r10-8], 1\nldxdw %r0, [%r1+0]\nloop:\nadd %r0, 1\njlt %r0, 9, loop\nexit\n"), 0o600))
	code, stdout, stderr := kflex("verify", good)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "accepted")
	assert.Contains(t, stdout, "2 memory accesses, 2 need no guard")
	code, stdout, _ = kflex("verify", "--json", good)
	require.Equal(t, 0, code)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	for _, k := range []string{"accepted", "insns_processed", "states", "peak_states", "guards_total", "guards_elided", "cancel_points"} {
		assert.Contains(t, rep, k)
	}
	assert.Equal(t, []any{3.0}, rep["cancel_points"])

	bad := filepath.Join(dir, "bad.s")
	require.NoError(t, os.WriteFile(bad, []byte("mov %r6, %r10\nldxdw %r0, [%r6-8]\nexit\n"), 0o600))
	code, stdout, stderr = kflex("verify", "--json", bad)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "rejected")
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	assert.Equal(t, false, rep["accepted"])
	assert.Equal(t, map[string]any{"insn": 1.0, "reason": "invalid read from stack off -8 size 8: not all bytes written"}, rep["error"])
	code, stdout, _ = kflex("verify", bad)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, "rejected at instruction 1")
	assert.Contains(t, stdout, "R6=fp+0")

	// A helper call inside a critical section: one lock held there, its
	// address kept in r6.
	locked := filepath.Join(dir, "locked.s")
	require.NoError(t, os.WriteFile(locked, []byte("mov %r9, %r1\nldxdw %r6, [%r9+0]\nmov %r1, %r6\n"+serve.LockCall+
		fmt.Sprintf("\ncall %d\nmov %%r1, %%r6\n", serve.HelperTime)+serve.UnlockCall+"\nmov %r0, 0\nexit\n"+mcs.BytecodeLock), 0o600))
	code, stdout, stderr = kflex("verify", "--json", locked)
	require.Equal(t, 0, code, stderr)
	assertSnakeCase(t, stdout)
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep))
	assert.Contains(t, rep["cancel_table"], map[string]any{"slot": 8.0, "locks": 1.0, "lock_regs": []any{6.0}})
	code, stdout, _ = kflex("verify", locked)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "at 8: 1 lock(s) held, addresses in r6")

	// The runtime's interface: its helpers take numbers, its context is
	// read-only words.
	for src, reason := range map[string]string{
		fmt.Sprintf("call %d\nexit\n", serve.HelperTrace): "helper trace: R1 is a ctx pointer; it takes a number",
		"stdw [%r1+0], 1\nmov %r0, 0\nexit\n":             "write to context field arg (off=0), which is read-only",
		"ldxw %r0, [%r1+8]\nexit\n":                       "invalid context access off=8 size=4: not a whole field",
	} {
		prog := filepath.Join(dir, "iface.s")
		require.NoError(t, os.WriteFile(prog, []byte(src), 0o600))
		code, stdout, _ = kflex("verify", prog)
		assert.Equal(t, 1, code, src)
		assert.Contains(t, stdout, reason, src)
	}
	// Another context size is not the runtime's context: no fields.
	narrow := filepath.Join(dir, "narrow.s")
	require.NoError(t, os.WriteFile(narrow, []byte("ldxw %r0, [%r1+8]\nexit\n"), 0o600))
	code, stdout, _ = kflex("verify", "--ctx-size", "64", narrow)
	assert.Equal(t, 0, code, stdout)
}

// TestVerifyJSON: kflex verify --json prints one object for every outcome,
// its verdict naming it, with the same keys each time, and exits 0 only when
// the program is accepted.
func TestVerifyJSON(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		return path
	}
	insn := func(n float64) map[string]any { return map[string]any{"insn": n} }
	for _, tc := range []struct {
		name, path, verdict string
		code                int
		err                 map[string]any // the error's fields, reason by its start ("": none)
		reason, stderr      string
	}{
		{"accepted", write("ok.s", "mov %r0, 0\nexit\n"), "accepted", 0, nil, "", ""},
		{"rejected", write("loop.s", "mov %r0, 0\nloop:\nadd %r0, 1\nja loop\n"), "rejected", 1, insn(0),
			"no exit is reachable from here (an endless loop)", "rejected"},
		{"recursive", write("rec.s", "call local f\nexit\nf:\ncall local f\nexit\n"), "rejected", 1, insn(2),
			"call chain main → f → f is recursive", "rejected"},
		{"invalid", write("fall.s", "mov %r0, 1\n"), "invalid", 1, insn(0),
			"MovImm: last instruction falls off the end of the program", "not valid bytecode"},
		{"empty", write("empty.s", ""), "invalid", 1, insn(0), "empty program", "not valid bytecode"},
		{"unknown opcode", write("op.bin", "\xff\x00\x00\x00\x00\x00\x00\x00\x95\x00\x00\x00\x00\x00\x00\x00"),
			"invalid", 1, insn(0), "ALUOp(240)Reg: unknown opcode", "not valid bytecode"},
		{"does not parse", write("bad.s", "frob %r0\n"), "unreadable", 1, map[string]any{}, "", `unknown mnemonic "frob"`},
		{"bad ELF", write("bad.o", "\x7fELF\x02\x01"), "unreadable", 1, map[string]any{}, "", "bad.o: not an ELF object"},
		{"raw bytes cut short", write("short.bin", "\x95\x00\x00\x00"), "unreadable", 1, map[string]any{}, "",
			"bytecode length 4 is not a multiple of 8"},
		{"missing file", filepath.Join(dir, "none.s"), "unreadable", 1, map[string]any{}, "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := kflex("verify", "--json", tc.path)
			assert.Equal(t, tc.code, code, stderr)
			assert.Contains(t, stderr, tc.stderr)
			assertSnakeCase(t, stdout)
			var rep map[string]any
			require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
			for _, k := range []string{"verdict", "accepted", "insns_processed", "states", "peak_states", "guards_total",
				"guards_elided", "cancel_points", "cancel_table"} {
				assert.Contains(t, rep, k)
			}
			assert.Equal(t, tc.verdict, rep["verdict"])
			assert.Equal(t, tc.code == 0, rep["accepted"])
			if tc.err == nil {
				assert.NotContains(t, rep, "error")
				return
			}
			e, ok := rep["error"].(map[string]any)
			require.True(t, ok, "an error object: %s", stdout)
			reason, _ := e["reason"].(string)
			delete(e, "reason")
			assert.Equal(t, tc.err, e, "the error's instruction (none when unreadable)")
			if tc.reason != "" {
				assert.Equal(t, tc.reason, reason)
			} else {
				assert.Contains(t, reason, tc.stderr, "the reason is the one on stderr")
			}
		})
	}
}

// TestServeEvents: "kflex serve --every --udp" runs extensions on a timer
// and on datagrams.
func TestServeEvents(t *testing.T) {
	dir := t.TempDir()
	sum := filepath.Join(dir, "first.s") // the datagram's first byte plus its length
	require.NoError(t, os.WriteFile(sum, []byte("ldxb %r0, [%r3+0]\nldxdw %r2, [%r1+40]\nadd %r0, %r2\nexit\n"), 0o600))
	tick := filepath.Join(dir, "tick.s")
	require.NoError(t, os.WriteFile(tick, []byte("mov %r0, 0\nexit\n"), 0o600))
	sock := filepath.Join(dir, "sock")
	cmd := exec.Command(os.Args[0], "serve", "--socket", sock, "--size", "16M", "--threads", "1",
		"--every", "tick@1ms", "--udp", "first@127.0.0.1:0", sum, tick)
	cmd.Env = append(os.Environ(), "KFLEX_CLI=1")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	var addr string
	require.Eventually(t, func() bool {
		_, rest, ok := strings.Cut(out.String(), "first on datagrams to ")
		addr, _, _ = strings.Cut(rest, "\n")
		return ok && strings.Contains(rest, "\n")
	}, 10*time.Second, 10*time.Millisecond, "no UDP address: %s", out)
	c, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte{40, 1, 2})
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	reply := make([]byte, 64)
	n, err := c.Read(reply)
	require.NoError(t, err)
	require.Equal(t, 9, n)
	assert.Equal(t, []byte{0, 43, 0, 0, 0, 0, 0, 0, 0}, reply[:n])
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", out)

	for _, bad := range []string{"--every=tick", "--every=tick@0s", "--udp=first"} {
		code, _, stderr := kflex("serve", "--socket", sock, bad, tick)
		assert.Equal(t, 2, code, bad)
		assert.Contains(t, stderr, "want NAME@", bad)
	}
	code, _, stderr := kflex("serve", "--socket", sock, "--every", "nope@1ms", tick)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `no program "nope"`)
}

// syncBuffer is a bytes.Buffer a child's output and the test may share.
type syncBuffer = testutil.Buffer

// TestServeCancels: with no time budget (--budget 0), an endless extension
// runs until 'kflex cancel' names it; --budget-for bounds one program; and
// SIGTERM stops a runtime whose extensions run endlessly, promptly.
func TestServeCancels(t *testing.T) {
	dir := t.TempDir()
	spin := filepath.Join(dir, "spin.s")
	require.NoError(t, os.WriteFile(spin, []byte("mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit\n"), 0o600))
	short := filepath.Join(dir, "short.s")
	require.NoError(t, os.WriteFile(short, []byte("mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit\n"), 0o600))
	sock := filepath.Join(dir, "sock")
	cmd, out, c := startServe(t, sock, "--budget", "0", "--budget-for", "short@30ms", spin, short)
	defer c.Close()

	_, err := c.Invoke("short", 0)
	var ie *userspace.InvokeError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Message, "its 30ms time budget ran out")

	done := make(chan error, 1)
	go func() { _, err := c.Invoke("spin", 0); done <- err }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("spin ended without a budget: %v", err)
	default:
	}
	code, stdout, stderr := kflex("cancel", "--socket", sock, "--json", "spin")
	require.Equal(t, 0, code, stderr)
	assert.JSONEq(t, `{"program": "spin", "cancelled": 1}`, stdout)
	assertSnakeCase(t, stdout)
	require.ErrorAs(t, <-done, &ie)
	assert.Contains(t, ie.Message, "cancelled on request")

	code, stdout, stderr = kflex("cancel", "--socket", sock, "--json", "spinn")
	assert.Equal(t, 1, code, "a program the runtime does not serve")
	assert.JSONEq(t, `{"error": "cancel spinn: no program \"spinn\""}`, stdout)
	assert.Contains(t, stderr, `kflex: cancel spinn: no program "spinn"`)

	code, _, stderr = kflex("cancel", "spin")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "need --socket")
	code, _, stderr = kflex("serve", "--socket", sock, "--budget", "-1s", spin)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--budget -1s: want at least 0s")

	go func() { _, err := c.Invoke("spin", 0); done <- err }()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		assert.NoError(t, err, "%s", out)
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("kflex serve did not exit within 10s of SIGTERM with an extension running: %s", out)
	}
	t.Logf("SIGTERM with an endless extension running: exited after %v", time.Since(start))
	assert.Less(t, time.Since(start), 2*time.Second)
	err = <-done
	require.Error(t, err)
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// assertSnakeCase checks that out is one JSON object whose keys, at every
// depth, are snake_case.
func assertSnakeCase(t *testing.T, out string) {
	t.Helper()
	var v any
	dec := json.NewDecoder(strings.NewReader(out))
	require.NoError(t, dec.Decode(&v), "%s", out)
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "one object, nothing after it: %s", out)
	require.IsType(t, map[string]any{}, v, "an object: %s", out)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				assert.Regexp(t, snakeCase, k, "key %s.%s", path, k)
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("", v)
}

// TestBenchRecoveryGlibc builds the robust-mutex baseline (bench/robustmutex,
// as make bench does) and checks that kflex bench recovery measures glibc's
// robust mutex in the same run, with both of its holders.
func TestBenchRecoveryGlibc(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skipf("skipped: no C compiler to build the baseline: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "robust-pthread")
	src := filepath.Join(testutil.ModuleRoot(t), "bench", "robustmutex", "robust.c")
	out, err := exec.Command(cc, "-O2", "-Wall", "-pthread", "-o", bin, src).CombinedOutput()
	require.NoError(t, err, "%s", out)
	code, stdout, stderr := kflex("bench", "--kills", "5", "--robust", bin, "recovery", "--json")
	require.Equal(t, 0, code, stderr)
	var res benchResult
	require.NoError(t, json.Unmarshal([]byte(stdout), &res))
	for _, w := range []string{"go", "jit", "glibc", "glibc_go_sized"} {
		require.NotNil(t, res.row(w), "row %s: %s", w, stdout)
		assert.Greater(t, res.row(w)["p50_us"], 0.0, w)
		assert.GreaterOrEqual(t, res.row(w)["p99_us"], res.row(w)["p50_us"], w)
	}
}
