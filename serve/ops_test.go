package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// textLog is a logger of every level writing text lines without the time
// to w.
func textLog(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
}

// scrape gets the metrics from reg over HTTP, as Prometheus would, checks
// them with promlint, and parses them.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	return fams
}

// sample finds the sample of family name whose labels are labels (name,
// value, ...); it fails the test if there is none.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	f := fams[name]
	require.NotNil(t, f, "no metric %s", name)
next:
	for _, m := range f.Metric {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no sample of %s with labels %v", name, labels)
	return nil
}

// value is the value of a counter or gauge sample.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := sample(t, fams, name, labels...)
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestMetrics scrapes a runtime's metrics over HTTP after real work: client
// invocations; an extension cancelled by its budget while it holds a lock
// (an error, a cancellation and an abandoned lock); an extension that then
// takes the lock over (an owner-died recovery, and a lock wait); and one
// that waits 30 ms behind a Go holder (a lock wait and hold of about that).
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := newHoldWorld(t, serve.Options{JIT: 1, Budgets: map[string]time.Duration{"lockloop": 20 * time.Millisecond}, Metrics: reg})
	c, err := userspace.Dial(serveOn(t, w.rt), nil)
	require.NoError(t, err)
	defer c.Close()
	for i := range 3 {
		r0, err := c.Invoke("add1", uint64(i))
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), r0)
	}
	_, err = c.Invoke("nosuch", 0)
	require.Error(t, err, "an unknown program is no program's invocation")

	_, err = w.invoke(context.Background(), "lockloop")
	var ce *cancel.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, cancel.Budget, ce.Cause)
	r0, err := w.invoke(context.Background(), "lockonce")
	require.NoError(t, err)
	require.Equal(t, int64(mcs.LockOwnerDied), int64(r0), "lockonce takes the abandoned lock over")

	// A wait behind a Go holder for 30 ms.
	require.NoError(t, w.lockGo(t))
	done := make(chan error, 1)
	go func() {
		r0, err := w.invoke(context.Background(), "lockonce")
		if err == nil && r0 != 0 {
			err = fmt.Errorf("lockonce returned %d", int64(r0))
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return atomic.LoadUint64(w.h.Uint64(w.lock))>>32 != 0 },
		10*time.Second, 100*time.Microsecond, "the extension never queued")
	time.Sleep(30 * time.Millisecond)
	w.mu.Unlock()
	require.NoError(t, <-done)

	fams := scrape(t, reg)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"kflex_invocations_total", []string{"program", "add1"}, 3},
		{"kflex_invocation_errors_total", []string{"program", "add1"}, 0},
		{"kflex_invocations_total", []string{"program", "lockloop"}, 1},
		{"kflex_invocation_errors_total", []string{"program", "lockloop"}, 1},
		{"kflex_invocations_total", []string{"program", "lockonce"}, 2},
		{"kflex_invocation_errors_total", []string{"program", "lockonce"}, 0},
		{"kflex_cancellations_total", []string{"cause", "budget"}, 1},
		{"kflex_cancellations_total", []string{"cause", "request"}, 0},
		{"kflex_locks_abandoned_total", nil, 1},
		{"kflex_lock_owner_died_recoveries_total", nil, 1},
		{"kflex_executors", nil, 1},
		{"kflex_executors_busy", nil, 0},
		{"kflex_attached_processes", nil, 1},
		{"kflex_owner_slots", []string{"state", "alive"}, 2}, // the runtime and the client
		{"kflex_owner_slots", []string{"state", "dead"}, 0},
		{"kflex_heap_size_bytes", nil, float64(w.h.Size())},
		{"kflex_heap_live_bytes", nil, float64(w.h.Stats().LiveBytes)},
		{"kflex_heap_pages", []string{"state", "free"}, float64(w.h.Stats().FreePages)},
	} {
		assert.Equal(t, tc.want, value(t, fams, tc.name, tc.labels...), "%s%v", tc.name, tc.labels)
	}
	run := sample(t, fams, "kflex_invocation_duration_seconds", "program", "add1").Histogram
	assert.Equal(t, uint64(3), run.GetSampleCount())
	assert.Greater(t, run.GetSampleSum(), 0.0)
	loop := sample(t, fams, "kflex_invocation_duration_seconds", "program", "lockloop").Histogram
	assert.Equal(t, uint64(1), loop.GetSampleCount())
	assert.GreaterOrEqual(t, loop.GetSampleSum(), 0.02, "lockloop ran its 20 ms budget")

	// Both lockonce calls waited: once for the abandoned lock (until its
	// first check took it over), once 30 ms at the head of the queue.
	wait := sample(t, fams, "kflex_lock_wait_seconds", "program", "lockonce").Histogram
	hold := sample(t, fams, "kflex_lock_hold_seconds", "program", "lockonce").Histogram
	assert.Equal(t, uint64(2), wait.GetSampleCount())
	assert.Equal(t, uint64(2), hold.GetSampleCount())
	t.Logf("lockonce: waits %d, %.6f s in all; holds seen %d, %.6f s", wait.GetSampleCount(), wait.GetSampleSum(), hold.GetSampleCount(), hold.GetSampleSum())
	for name, h := range map[string]*dto.Histogram{"wait": wait, "hold": hold} {
		assert.Greater(t, h.GetSampleSum(), 0.015, "%s: the 30 ms behind the Go holder, less what 256-spin checks miss", name)
		assert.Less(t, h.GetSampleSum(), 5.0, name)
	}
	assert.Zero(t, sample(t, fams, "kflex_lock_wait_seconds", "program", "add1").Histogram.GetSampleCount())

	// Closing unregisters: a registry outlives the runtimes it served.
	require.NoError(t, w.rt.Close())
	_, err = reg.Gather()
	require.NoError(t, err)
	assert.Empty(t, mustGather(t, reg))
}

func mustGather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	fams, err := reg.Gather()
	require.NoError(t, err)
	return fams
}

// idleClient starts a child process that attaches to the runtime at socket
// (TestClientsKnown's idle role) and waits until it has; the test kills it
// at its end, or earlier.
func idleClient(t *testing.T, socket string) *exec.Cmd {
	cmd := testutil.Child(t, "TestClientsKnown", roleIdle, "KFLEX_SOCKET="+socket)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "attached")
	return cmd
}

// TestStatusAndLog: a client's Status lists the programs with their
// invocations and errors, and the connected processes (two children and
// itself) with their owner slots; the log says who attached, who died (a
// child killed) and who detached.
func TestStatusAndLog(t *testing.T) {
	var log testutil.Buffer
	rt, _ := runtimeOf(t, endless, serve.Options{JIT: 1, Budget: 10 * time.Millisecond, Logger: textLog(&log)})
	sock := serveOn(t, rt)
	a, b := idleClient(t, sock), idleClient(t, sock)
	c, err := userspace.Dial(sock, nil)
	require.NoError(t, err)
	for range 2 {
		_, err := c.Invoke("add1", 1)
		require.NoError(t, err)
	}
	_, err = c.Invoke("spin", 0)
	require.ErrorContains(t, err, "time budget ran out")

	before := time.Now()
	s, err := c.Status()
	require.NoError(t, err)
	assert.Equal(t, 1, s.Executors)
	assert.Equal(t, []userspace.ProgramStatus{
		{Name: "add1", Engine: "jit", Invocations: 2},
		{Name: "spin", Engine: "jit", Invocations: 1, Errors: 1},
		{Name: "spin_helper", Engine: "jit"},
	}, s.Programs)
	require.Len(t, s.Processes, 3)
	pids, slots := map[int]bool{}, map[int]bool{}
	for _, p := range s.Processes {
		pids[p.PID] = true
		slots[p.Slot] = true
		assert.GreaterOrEqual(t, p.Slot, 0, "pid %d attached to the heap", p.PID)
		assert.WithinDuration(t, before, p.Since, time.Minute, "pid %d", p.PID)
	}
	assert.Equal(t, map[int]bool{a.Process.Pid: true, b.Process.Pid: true, os.Getpid(): true}, pids)
	assert.Len(t, slots, 3, "one owner slot each")
	assert.Equal(t, s, rt.Status(), "the same in process")

	require.NoError(t, a.Process.Kill())
	a.Wait()
	require.NoError(t, c.Close())
	waitLog := func(line string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Contains(log.String(), line) }, 10*time.Second, time.Millisecond,
			"no line %q in the log:\n%s", line, log.String())
	}
	for _, pid := range []int{a.Process.Pid, b.Process.Pid, os.Getpid()} {
		waitLog(fmt.Sprintf("level=INFO msg=\"process attached\" pid=%d uid=%d\n", pid, os.Getuid()))
	}
	waitLog(fmt.Sprintf("level=WARN msg=\"process died\" pid=%d slot=", a.Process.Pid))
	waitLog(fmt.Sprintf("level=INFO msg=\"process detached\" pid=%d calls_cancelled=0\n", os.Getpid()))
	waitLog("level=WARN msg=\"invocation cancelled\" program=spin cause=budget insn=")
	assert.Contains(t, log.String(), "level=INFO msg=serving socket="+sock)
	assert.NotContains(t, log.String(), fmt.Sprintf("pid=%d slot", b.Process.Pid), "b lives")
}

// TestSocketMode: Listen gives the socket the mode asked for, whatever the
// umask took away, and refuses modes a runtime cannot use.
func TestSocketMode(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o660, 0o600, 0o666} {
		path := filepath.Join(dir, fmt.Sprintf("s%o", mode))
		ln, err := serve.Listen(path, serve.ListenOptions{Mode: mode})
		require.NoError(t, err)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm(), "%#o", mode)
		assert.Equal(t, os.ModeSocket, fi.Mode().Type())
		ln.Close()
	}
	ln, err := serve.Listen(filepath.Join(dir, "default"), serve.ListenOptions{})
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(dir, "default"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), "0777 less the umask")
	ln.Close()
	for mode, msg := range map[os.FileMode]string{
		0o1660: "socket mode 01660: only permission bits (at most 0777)",
		0o460:  "socket mode 0460: the owner needs read and write permission (0600) to connect",
	} {
		path := filepath.Join(dir, "bad")
		_, err := serve.Listen(path, serve.ListenOptions{Mode: mode})
		assert.EqualError(t, err, "listen on "+path+": "+msg)
		_, err = os.Stat(path)
		assert.ErrorIs(t, err, os.ErrNotExist, "nothing created")
	}
}

// BenchmarkMetricsCost is what metrics add to an invocation of an empty
// extension: in process (Runtime.Invoke) and from a client over the socket,
// each alternated with a runtime without metrics (testutil.Alternate), so
// that a loaded machine's drift reaches both alike.
func BenchmarkMetricsCost(b *testing.B) {
	plain := start(b)
	h, err := heap.Create(filepath.Join(b.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(b, err)
	metered := startOn(b, h, serve.Options{JIT: 2, Metrics: prometheus.NewRegistry()})
	ctx := context.Background()
	b.Run("invoke", func(b *testing.B) {
		ns := testutil.Alternate(b, 100, func() { plain.rt.Invoke(ctx, "empty", 0) }, func() { metered.rt.Invoke(ctx, "empty", 0) })
		b.ReportMetric(ns[0], "ns/plain")
		b.ReportMetric(ns[1], "ns/metrics")
	})
	b.Run("client", func(b *testing.B) {
		var clients []*userspace.Client
		for _, f := range []*fixture{plain, metered} {
			c, err := userspace.Dial(f.socket, nil)
			require.NoError(b, err)
			defer c.Close()
			clients = append(clients, c)
		}
		ns := testutil.Alternate(b, 20, func() { clients[0].Invoke("empty", 0) }, func() { clients[1].Invoke("empty", 0) })
		b.ReportMetric(ns[0], "ns/plain")
		b.ReportMetric(ns[1], "ns/metrics")
	})
}
