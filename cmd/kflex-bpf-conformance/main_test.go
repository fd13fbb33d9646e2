package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/isatest"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// spaced writes bytes the way the bpf_conformance runner does: two spaces after
// each byte.
func spaced(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		s.WriteString(hex.EncodeToString([]byte{c}) + "  ")
	}
	return s.String()
}

func plugin(args []string, program []byte) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(spaced(program)+"\n"), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestISAThroughProtocol runs every ISA test file through the plugin protocol,
// as the bpf_conformance runner would, on both engines.
func TestISAThroughProtocol(t *testing.T) {
	cases, err := isatest.Load("../../testdata/isa")
	require.NoError(t, err)
	for _, engine := range []string{"--interp", "--jit"} {
		for _, c := range cases {
			if engine == "--jit" && strings.HasPrefix(c.Name, "oob-") {
				continue // the JIT confines such accesses instead of failing
			}
			t.Run(engine+"/"+c.Name, func(t *testing.T) { checkProtocol(t, c, engine) })
		}
	}
}

func checkProtocol(t *testing.T, c isatest.Case, engine string) {
	var args []string
	if len(c.Mem) > 0 {
		args = append(args, spaced(c.Mem))
	}
	code, stdout, stderr := plugin(append(args, engine), c.Raw)
	if c.Error != "" {
		assert.Equal(t, 1, code)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, c.Error)
		return
	}
	require.Equal(t, 0, code, stderr)
	require.True(t, strings.HasPrefix(stdout, "0x"), stdout)
	r0, err := strconv.ParseUint(strings.TrimSpace(stdout), 0, 64)
	require.NoError(t, err)
	assert.Equal(t, c.Result, r0)
}

func TestBadInput(t *testing.T) {
	exit := []byte{0x95, 0, 0, 0, 0, 0, 0, 0}
	for _, tc := range []struct {
		args    []string
		program []byte
		code    int
		msg     string
	}{
		{[]string{"zz"}, exit, 2, "memory: bad hex"},
		{[]string{"--frobnicate"}, exit, 2, `unknown option "--frobnicate"`},
		{nil, exit[:5], 1, "bytecode length 5 is not a multiple of 8"},
		{[]string{"--elf"}, exit, 1, "read ELF"},
		{nil, []byte{0xff, 0, 0, 0, 0, 0, 0, 0}, 1, "instruction 0"},
	} {
		code, stdout, stderr := plugin(tc.args, tc.program)
		assert.Equal(t, tc.code, code, "%v", tc.args)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, tc.msg)
	}
	var out, errOut bytes.Buffer
	assert.Equal(t, 1, run(nil, strings.NewReader("95 zz 00\n"), &out, &errOut))
	assert.Contains(t, errOut.String(), "bad hex")
}

// TestBinary builds the plugin and runs one program through a real process.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kflex-bpf-conformance")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))
	cmd := exec.Command(bin, spaced([]byte{1, 2, 3}))
	// ldxb r0, [r1+2]; exit
	cmd.Stdin = strings.NewReader(spaced([]byte{0x71, 0x10, 2, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0}) + "\n")
	got, err := cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, "0x3\n", string(got))
}

// TestThirdPartySuite runs the test files of the public bpf_conformance suite
// (its tests directory, named by KFLEX_BPF_CONFORMANCE_TESTS; make
// conformance) through the plugin on both engines and reports what passed.
// Files that need what kflex does not offer (maps, kfuncs) are not run but
// named; any other failure fails the test.
func TestThirdPartySuite(t *testing.T) {
	dir := os.Getenv("KFLEX_BPF_CONFORMANCE_TESTS")
	if dir == "" {
		t.Skip("KFLEX_BPF_CONFORMANCE_TESTS (bpf_conformance's tests directory) is not set")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.data"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no *.data files in %s", dir)
	// What kflex deliberately lacks, by the file's program.
	unsupported := regexp.MustCompile(`(?m)^\s*(call runtime|lddw \S+, map_by_|call bpf_map_)`)
	passed := map[string]int{}
	var lacking []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		require.NoError(t, err)
		c, err := isatest.Parse(f)
		if unsupported.Match(text) {
			lacking = append(lacking, filepath.Base(f))
			continue
		}
		if err != nil {
			t.Errorf("%v", err) // the file itself, not the engines
			continue
		}
		for _, engine := range []string{"--interp", "--jit"} {
			if t.Run(engine+"/"+c.Name, func(t *testing.T) { checkProtocol(t, c, engine) }) {
				passed[engine]++
			}
		}
	}
	t.Logf("%d files: %d pass on --interp, %d on --jit; %d need maps or kfuncs, which kflex does not offer: %v",
		len(files), passed["--interp"], passed["--jit"], len(lacking), lacking)
}
