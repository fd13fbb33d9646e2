package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/userspace"
)

// TestServeOperated: "kflex serve --metrics --socket-mode --log-format json"
// serves metrics that count the invocations made, a socket with the mode
// asked for, and JSON log lines; "kflex status" lists the program and the
// attached process, in text and in JSON.
func TestServeOperated(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "add1.s")
	require.NoError(t, os.WriteFile(prog, []byte("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit\n"), 0o600))
	sock := filepath.Join(dir, "sock")
	old := syscall.Umask(0o077) // the mode is the one asked for, not what the umask leaves
	cmd, out, c := startServe(t, sock, "--metrics", "127.0.0.1:0", "--socket-mode", "0660", "--log-format", "json", "--log-level", "debug", prog)
	syscall.Umask(old)
	defer c.Close()
	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())

	for i := range 2 {
		r0, err := c.Invoke("add1", uint64(i))
		require.NoError(t, err)
		assert.Equal(t, uint64(i+1), r0)
	}
	_, err = c.Invoke("add2", 0)
	require.Error(t, err)

	// The log: one JSON object a line, the metrics' URL and this process's
	// attach among them.
	var url string
	attached := false
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue // the command's own output
		}
		switch line["msg"] {
		case "serving metrics":
			url, _ = line["url"].(string)
		case "process attached":
			attached = attached || line["pid"] == float64(os.Getpid())
		}
		assert.Contains(t, []any{"DEBUG", "INFO", "WARN", "ERROR"}, line["level"])
	}
	assert.True(t, attached, "no attach line for pid %d in:\n%s", os.Getpid(), out)
	require.NotEmpty(t, url, "no metrics URL in:\n%s", out)

	resp, err := http.Get(url)
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	inv := fams["kflex_invocations_total"]
	require.NotNil(t, inv)
	require.Len(t, inv.Metric, 1)
	assert.Equal(t, 2.0, inv.Metric[0].Counter.GetValue())
	assert.Equal(t, 1.0, fams["kflex_attached_processes"].Metric[0].Gauge.GetValue())
	assert.NotNil(t, fams["go_goroutines"], "Go's metrics")
	assert.NotNil(t, fams["process_resident_memory_bytes"], "the process's metrics")

	code, stdout, stderr := kflex("status", "--socket", sock, "--json")
	require.Equal(t, 0, code, stderr)
	var s userspace.Status
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	assert.Equal(t, []userspace.ProgramStatus{{Name: "add1", Engine: "jit", Invocations: 2}}, s.Programs)
	assert.Equal(t, 1, s.Executors)
	require.Len(t, s.Processes, 2, "this test's client, and the status command's")
	for _, p := range s.Processes {
		assert.Equal(t, os.Getpid(), p.PID)
		assert.GreaterOrEqual(t, p.Slot, 0)
		assert.WithinDuration(t, time.Now(), p.Since, time.Minute)
	}
	assert.Contains(t, stdout, `"invocations":2`)

	code, stdout, stderr = kflex("status", "--socket", sock)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "executors: 1 (0 busy)")
	assert.Regexp(t, `(?m)^add1 +jit +2 +0$`, stdout)
	assert.Regexp(t, fmt.Sprintf(`(?m)^%d +\d+ +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`, os.Getpid()), stdout)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", out)
	_, err = http.Get(url)
	assert.Error(t, err, "the metrics server stops with the runtime")
}

// TestServeOpsBadFlags: bad values of the operating flags are refused,
// named: in the command line (exit 2) or when used (exit 1).
func TestServeOpsBadFlags(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "add1.s")
	require.NoError(t, os.WriteFile(prog, []byte("mov %r0, 0\nexit\n"), 0o600))
	sock := filepath.Join(dir, "sock")
	for _, tc := range []struct {
		flag, value, msg string
	}{
		{"--socket-mode", "0999", "want an octal mode such as 0660"},
		{"--socket-mode", "rw", "want an octal mode such as 0660"},
		{"--socket-mode", "0460", "want a mode from 0600 to 0777 that gives the owner read and write permission"},
		{"--socket-mode", "01777", "want a mode from 0600 to 0777"},
		{"--metrics", "9464", "want host:port"},
		{"--log-level", "loud", "want debug, info, warn or error"},
		{"--log-format", "xml", "want text or json"},
	} {
		code, _, stderr := kflex("serve", "--socket", sock, "--size", "16M", tc.flag, tc.value, prog)
		assert.Equal(t, 2, code, "%s %s: %s", tc.flag, tc.value, stderr)
		assert.Contains(t, stderr, fmt.Sprintf("%q: %s", tc.value, tc.msg), "the bad value, named")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	for _, addr := range []string{busy.Addr().String(), "256.0.0.1:80"} {
		code, _, stderr := kflex("serve", "--socket", sock, "--size", "16M", "--metrics", addr, prog)
		assert.Equal(t, 1, code, stderr)
		assert.Contains(t, stderr, "kflex: serve: metrics on "+addr+": listen tcp")
	}
	_, err = os.Stat(sock)
	assert.ErrorIs(t, err, os.ErrNotExist, "no socket left behind")
}

// TestStatusErrors: status needs a socket, and a runtime on it.
func TestStatusErrors(t *testing.T) {
	code, _, stderr := kflex("status")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "status: usage: need --socket")
	code, _, stderr = kflex("status", "--socket", filepath.Join(t.TempDir(), "nobody"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "kflex: status: no kflex runtime at ")
	code, _, stderr = kflex("status", "--socket", "s", "extra")
	assert.Equal(t, 2, code, stderr)

	// A runtime that takes the connection and never answers (stopped, or
	// wedged): status and cancel give up rather than hang.
	silent := filepath.Join(t.TempDir(), "silent")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: silent, Net: "unixpacket"})
	require.NoError(t, err)
	defer ln.Close() // resets the connections it never accepted: the dials end
	defer func(d time.Duration) { answerWithin = d }(answerWithin)
	answerWithin = 100 * time.Millisecond
	for _, args := range [][]string{{"status", "--socket", silent}, {"cancel", "--socket", silent, "p"}} {
		code, _, stderr = kflex(args...)
		assert.Equal(t, 1, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "the kflex runtime at "+silent+" did not answer within 100ms", args)
	}
}
