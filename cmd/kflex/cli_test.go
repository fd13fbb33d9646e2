package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// visible are the commands kflex help lists.
func visible() []string {
	var names []string
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// TestHelpAndBadInvocations: for every command, help asked for (-h, --help,
// kflex help CMD) is the usage on stdout and exit 0; an unknown flag is the
// error and the usage on stderr, nothing on stdout, exit 2.
func TestHelpAndBadInvocations(t *testing.T) {
	for _, name := range visible() {
		t.Run(name, func(t *testing.T) {
			for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
				code, stdout, stderr := kflex(args...)
				assert.Equal(t, 0, code, "%v: %s", args, stderr)
				assert.Contains(t, stdout, "usage: kflex "+name, args)
				assert.Empty(t, stderr, args)
			}
			code, stdout, stderr := kflex(name, "--no-such-flag")
			if name == "heap" {
				code, stdout, stderr = kflex(name, "info", "--no-such-flag")
			}
			assert.Equal(t, 2, code, stderr)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, "flag provided but not defined: -no-such-flag")
			assert.Contains(t, stderr, "\n\nusage: kflex "+name)
		})
	}
	// A subcommand's usage, for its bad command line.
	code, stdout, stderr := kflex("heap", "create", "--size", "x", "h")
	assert.Equal(t, 2, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "usage: kflex heap create [--size SIZE] PATH")
	code, _, stderr = kflex("heap")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "kflex: heap: usage: missing subcommand (create, info or check)\n\nusage: kflex heap create|info|check")
	code, stdout, _ = kflex("help", "heap", "check")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "usage: kflex heap check [--json] PATH")
}

// TestFlagsAfterArguments: flags may follow the positional arguments, and
// "--" ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	path, _ := usedHeapFile(t)
	code, stdout, stderr := kflex("heap", "info", path, "--json")
	require.Equal(t, 0, code, stderr)
	assertSnakeCase(t, stdout)
	assert.Contains(t, stdout, `"live_objects": 26`, "the allocator's figures, snake_case")
	var in info
	require.NoError(t, json.Unmarshal([]byte(stdout), &in))
	assert.Equal(t, uint64(2<<20), in.Size)

	prog := filepath.Join(t.TempDir(), "p.s")
	require.NoError(t, os.WriteFile(prog, []byte("mov %r0, 0\nexit\n"), 0o600))
	code, stdout, stderr = kflex("verify", prog, "--ctx-size", "8", "--json")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `"verdict": "accepted"`)

	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	n := fs.Int("n", 0, "")
	require.NoError(t, parseArgs(fs, []string{"a", "--json", "b", "-n", "3", "c", "--", "--n", "-"}))
	assert.True(t, *asJSON)
	assert.Equal(t, 3, *n)
	assert.Equal(t, []string{"a", "b", "c", "--n", "-"}, fs.Args())
	assert.ErrorIs(t, parseArgs(fs, []string{"a", "-n", "x"}), errUsage)
}

// TestVersion: kflex --version and kflex version print the module version
// and the toolchain, and the VCS revision where the build recorded one.
func TestVersion(t *testing.T) {
	code, stdout, stderr := kflex("--version")
	require.Equal(t, 0, code, stderr)
	assert.True(t, strings.HasPrefix(stdout, "kflex "), stdout)
	assert.Contains(t, stdout, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH)
	code, stdout2, _ := kflex("version")
	require.Equal(t, 0, code)
	assert.Equal(t, stdout, stdout2)
	code, stdout, _ = kflex("version", "--json")
	require.Equal(t, 0, code)
	assertSnakeCase(t, stdout)
	var v versionInfo
	require.NoError(t, json.Unmarshal([]byte(stdout), &v))
	assert.Equal(t, runtime.Version(), v.GoVersion)

	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "f1f8eb9c"}, {Key: "vcs.time", Value: "2026-12-07T13:21:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	assert.Equal(t, "kflex v0.3.0, revision f1f8eb9c (2026-12-07T13:21:00Z), modified, go1.26.8 "+runtime.GOOS+"/"+runtime.GOARCH,
		readVersion(bi).String())
	assert.Equal(t, "(unknown)", readVersion(nil).Version)
}

// TestJSONErrors: with --json, a command that fails without printing its
// object prints {"error": ...} on stdout (the message is on stderr too); a
// verifier's rejection adds where and why.
func TestJSONErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"heap", "info", "--json", missing}, 1, "no such file or directory"},
		{[]string{"heap", "check", missing, "--json"}, 1, "no such file or directory"},
		{[]string{"heap", "info", "--json"}, 2, "want 1 argument(s), got 0"},
		{[]string{"run", "--json", "--repeat", "0", missing}, 2, "--repeat 0: want 1 to 10000000"},
		{[]string{"run", missing, "--json"}, 1, "no such file or directory"},
		{[]string{"bench", "--json", "locks"}, 2, `unknown suite "locks"`},
		{[]string{"cancel", "--json", "--socket", filepath.Join(dir, "s"), "p"}, 1, "no kflex runtime"},
		{[]string{"demo", "--json"}, 2, "flag provided but not defined: -json"},
	} {
		code, stdout, stderr := kflex(tc.args...)
		assert.Equal(t, tc.code, code, "%v: %s", tc.args, stderr)
		assertSnakeCase(t, stdout)
		var e map[string]any
		require.NoError(t, json.Unmarshal([]byte(stdout), &e), tc.args)
		assert.Contains(t, e["error"], tc.msg, tc.args)
		assert.Len(t, e, 1, "%v: only the error", tc.args)
		assert.Contains(t, stderr, "kflex: "+e["error"].(string), tc.args)
	}
	// Without --json, no JSON; a command that printed its object prints no
	// second one.
	code, stdout, _ := kflex("heap", "info", missing)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	code, stdout, _ = kflex("verify", "--json", missing)
	assert.Equal(t, 1, code)
	assertSnakeCase(t, stdout)
	assert.Contains(t, stdout, `"verdict": "unreadable"`)

	bad := filepath.Join(dir, "bad.s")
	require.NoError(t, os.WriteFile(bad, []byte("mov %r6, %r10\nldxdw %r0, [%r6-8]\nexit\n"), 0o600))
	code, stdout, _ = kflex("run", "--json", bad)
	assert.Equal(t, 1, code)
	assertSnakeCase(t, stdout)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &e))
	assert.Equal(t, "run: "+bad+" rejected: insn 1: invalid read from stack off -8 size 8: not all bytes written", e["error"])
	assert.Equal(t, 1.0, e["insn"])
	assert.Equal(t, "invalid read from stack off -8 size 8: not all bytes written", e["reason"])
	assert.Len(t, e["log"], 2)
}

// TestWantsJSON: which command lines ask for JSON.
func TestWantsJSON(t *testing.T) {
	for args, want := range map[string]bool{
		"info --json p": true, "info -json p": true, "info p --json=true": true, "info --json=false p": false,
		"info p": false, "info -- --json": false, "info json": false,
	} {
		assert.Equal(t, want, wantsJSON(strings.Fields(args)), args)
	}
}

// TestNumbersRefused: every numeric flag refuses negative and absurd values
// as a bad command line naming the flag and the value, before doing
// anything.
func TestNumbersRefused(t *testing.T) {
	prog := filepath.Join(t.TempDir(), "p.s")
	require.NoError(t, os.WriteFile(prog, []byte("mov %r0, 0\nexit\n"), 0o600))
	sock := filepath.Join(t.TempDir(), "s")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"verify", "--ctx-size", "-5", prog}, "--ctx-size -5: want 0 to 65536"},
		{[]string{"verify", "--ctx-size", "1000000", prog}, "--ctx-size 1000000: want 0 to 65536"},
		{[]string{"run", "--repeat", "-5", prog}, "--repeat -5: want 1 to 10000000"},
		{[]string{"run", "--repeat", "100000000", prog}, "--repeat 100000000: want 1 to 10000000"},
		{[]string{"run", "--budget", "-1s", prog}, "--budget -1s: want at least 0s"},
		{[]string{"run", "--arg", "-5", prog}, `invalid value "-5" for flag -arg`},
		{[]string{"run", "--size", "-16M", prog}, `invalid value "-16M" for flag -size`},
		{[]string{"run", "--engine", "llvm", prog}, `--engine "llvm": want jit or interp`},
		{[]string{"run", "--ctx", "zz", prog}, `--ctx "zz": encoding/hex: invalid byte`},
		{[]string{"run", "--ctx", strings.Repeat("00", 64<<10+1), prog}, "--ctx of 65537 bytes: want at most 65536"},
		{[]string{"run", "--ctx", "00", "--arg", "1", prog}, "--ctx and --arg exclude each other"},
		{[]string{"serve", "--socket", sock, "--threads", "0", prog}, "--threads 0: want 1 to 1024"},
		{[]string{"serve", "--socket", sock, "--threads", "100000", prog}, "--threads 100000: want 1 to 1024"},
		{[]string{"serve", "--socket", sock, "--size", "-1G", prog}, `invalid value "-1G" for flag -size`},
		{[]string{"serve", "--socket", sock, "--size", "3M", prog}, "--size 3M: want a power of two from 1M to 64G"},
		{[]string{"run", "--size", "128G", prog}, "--size 128G: want a power of two from 1M to 64G"},
		{[]string{"serve", "--socket", sock, "--budget-for", "p@-1s", prog}, `"p@-1s": want NAME@DURATION`},
		{[]string{"stress", "--procs", "-5"}, "--procs -5: want 1 to 64"},
		{[]string{"stress", "--threads", "0"}, "--threads 0: want 1 to 64"},
		{[]string{"stress", "--locks", "100000"}, "--locks 100000: want 1 to 1024"},
		{[]string{"stress", "--kills", "-1"}, "--kills -1: want 0 to 10000000"},
		{[]string{"stress", "--duration", "-1s"}, "--duration -1s: want 0s to 24h0m0s"},
		{[]string{"stress", "--plant", "typo"}, `--plant "typo": want norepair or nolock`},
		{[]string{"bench", "--time", "0s", "jit"}, "--time 0s: want 1ms to 1h0m0s"},
		{[]string{"bench", "--rounds", "-5", "lock"}, "--rounds -5: want 1 to 1000000000"},
		{[]string{"bench", "--kills", "0", "recovery"}, "--kills 0: want 1 to 1000000"},
		{[]string{"rseq-check", "--duration", "-1s"}, "--duration -1s: want 1ms to 1h0m0s"},
		{[]string{"heap", "create", "--size", "-5M", filepath.Join(t.TempDir(), "h")}, `invalid value "-5M" for flag -size`},
	} {
		code, stdout, stderr := kflex(tc.args...)
		assert.Equal(t, 2, code, "%v: %s", tc.args, stderr)
		assert.Empty(t, stdout, tc.args)
		assert.Contains(t, stderr, tc.msg, tc.args)
		assert.Contains(t, stderr, "usage: kflex "+tc.args[0], tc.args)
	}
	_, err := os.Stat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "a refused serve listened nowhere")
}

// TestSizeFlag: byteSize reads suffixes and prints the value back the same way.
func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]uint64{"1": 1, "4K": 4 << 10, "16M": 16 << 20, "2G": 2 << 30} {
		var s byteSize
		require.NoError(t, s.Set(in), in)
		assert.Equal(t, want, uint64(s), in)
		assert.Equal(t, in, s.String())
	}
	for _, in := range []string{"", "0", "-1", "1T", "M", "1.5M", "18446744073709551615G"} {
		var s byteSize
		assert.Error(t, s.Set(in), in)
	}
}

// TestProgress: the progress line is redrawn in place with the phase and
// its time, notes go above it, and the end clears it; without a terminal
// nothing is drawn.
func TestProgress(t *testing.T) {
	var w syncBuffer
	p := startProgress(&w, "kflex bench jit", time.Millisecond)
	p.phase("5 programs")
	require.Eventually(t, func() bool { return strings.Count(w.String(), "\rkflex bench jit: 5 programs, ") >= 3 },
		5*time.Second, time.Millisecond, "redrawn every tick")
	p.note("no kernel comparison: %s", "EPERM")
	p.phase("the kernel")
	p.end()
	out := w.String()
	assert.Contains(t, out, "\r\033[Kno kernel comparison: EPERM\n\rkflex bench jit: 5 programs, ")
	assert.Contains(t, out, "\rkflex bench jit: the kernel, 0.0s\033[K")
	assert.True(t, strings.HasSuffix(out, "\r\033[K"), "cleared at the end: %q", out)
	n := len(w.String())
	time.Sleep(5 * time.Millisecond)
	assert.Len(t, w.String(), n, "nothing drawn after the end")

	quiet := startProgress(nil, "x", time.Millisecond)
	quiet.phase("y")
	quiet.end()
}

// TestBenchTable: figures named ROW.FIGURE make a table, a row each, with
// "-" where a row lacks a figure; the others follow, one a line.
func TestBenchTable(t *testing.T) {
	rows, scalars := benchRows(map[string]float64{"jit.p50_us": 13.21, "jit.max_us": 110, "interp.p50_us": 132.857, "check_cost_pct": 5.1})
	var b bytes.Buffer
	require.NoError(t, writeBenchTable(&b, rows, scalars))
	assert.Equal(t, ""+
		"                  max_us  p50_us\n"+
		"  interp               -  132.86\n"+
		"  jit                110   13.21\n"+
		"\n"+
		"  check_cost_pct  5.10\n", b.String())
	obj := benchJSON("cancel", rows, scalars)
	js, err := json.Marshal(obj)
	require.NoError(t, err)
	assert.JSONEq(t, `{"suite": "cancel", "check_cost_pct": 5.1, "rows": [{"name": "interp", "p50_us": 132.857},
		{"name": "jit", "p50_us": 13.21, "max_us": 110}]}`, string(js))
	assertSnakeCase(t, string(js))
	assert.True(t, slices.IsSortedFunc(rows, func(a, b benchRow) int { return strings.Compare(a.name, b.name) }))
}
