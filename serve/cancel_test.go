package serve_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// Loops that end only when cancelled (their way out, r0 wrapping around, is
// 2^64 rounds away): a tight one with no helper call, and one that calls a
// helper every round. The back-edge is instruction 2 in both.
var endless = map[string]string{
	"spin":        "mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit",
	"spin_helper": fmt.Sprintf("mov %%r6, 1\nloop:\ncall %d\nadd %%r6, 1\njne %%r6, 0, loop\nmov %%r0, 0\nexit", abi.HelperTime),
	"add1":        "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit",
}

// cancelRuntime is a runtime with the executors o asks for and the endless
// programs.
func cancelRuntime(t testing.TB, o serve.Options) *serve.Runtime {
	rt, _ := runtimeOf(t, endless, o)
	return rt
}

// runtimeOf is a runtime on a new 8 MiB heap running the programs srcs
// (name → assembler text), both closed when the test ends.
func runtimeOf(t testing.TB, srcs map[string]string, o serve.Options) (*serve.Runtime, *heap.Heap) {
	t.Helper()
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	return runtimeOn(t, h, srcs, o), h
}

// runtimeOn is a runtime on h running the programs srcs (name → assembler
// text), closed when the test ends (before h, if h was made first).
func runtimeOn(t testing.TB, h *heap.Heap, srcs map[string]string, o serve.Options) *serve.Runtime {
	t.Helper()
	progs := map[string]asm.Instructions{}
	for name, src := range srcs {
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err, name)
		progs[name] = insns
	}
	o.Trace = io.Discard
	rt, err := serve.NewWith(h, progs, o)
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close() })
	return rt
}

// serveOn serves rt on a socket in the test's directory until the test ends,
// and returns the socket's path.
func serveOn(t *testing.T, rt *serve.Runtime) string {
	sock := filepath.Join(t.TempDir(), "sock")
	ln, err := serve.Listen(sock, serve.ListenOptions{})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		require.NoError(t, <-served)
	})
	return sock
}

var engines = map[string]serve.Options{"jit": {JIT: 1}, "interp": {Interpreted: 1}}

// requireCancelled checks err is the cancellation of program at its
// back-edge (or helper call) for cause c.
func requireCancelled(t *testing.T, err error, program string, c cancel.Cause) {
	t.Helper()
	require.ErrorIs(t, err, abi.ErrCancelled)
	var ce *cancel.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, program, ce.Program)
	assert.Equal(t, c, ce.Cause, "cause")
	assert.Contains(t, []int{1, 2, 3}, ce.Insn, "a cancellation point of the loop")
	assert.Contains(t, err.Error(), "program "+program+" cancelled at instruction")
}

// TestCancelCauses: each cause stops an endless loop, tight or calling a
// helper, in both engines, and says so.
func TestCancelCauses(t *testing.T) {
	for engine, o := range engines {
		for _, prog := range []string{"spin", "spin_helper"} {
			t.Run(engine+"/"+prog, func(t *testing.T) {
				o := o
				o.Budget = 30 * time.Millisecond
				rt := cancelRuntime(t, o)

				_, err := rt.Invoke(context.Background(), prog, 0)
				requireCancelled(t, err, prog, cancel.Budget)
				assert.Contains(t, err.Error(), "its 30ms time budget ran out")

				o.Budget = -1 // no budget: only the other causes stop it
				rt = cancelRuntime(t, o)
				ctx, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
				defer stop()
				_, err = rt.Invoke(ctx, prog, 0)
				requireCancelled(t, err, prog, cancel.Context)

				done := make(chan error, 1)
				go func() { _, err := rt.Invoke(context.Background(), prog, 0); done <- err }()
				waitRunning(t, rt, 1)
				assert.Equal(t, 0, rt.Cancel("add1"), "another program's invocations are not touched")
				assert.Equal(t, 1, rt.Cancel(prog))
				requireCancelled(t, <-done, prog, cancel.Request)

				// The executor runs the next program as if nothing happened.
				r0, err := rt.Invoke(context.Background(), "add1", 41)
				require.NoError(t, err)
				assert.Equal(t, uint64(42), r0)

				go func() { _, err := rt.Invoke(context.Background(), prog, 0); done <- err }()
				waitRunning(t, rt, 1)
				require.NoError(t, rt.Close())
				requireCancelled(t, <-done, prog, cancel.Shutdown)
			})
		}
	}
}

// waitRunning waits until n invocations run.
func waitRunning(t *testing.T, rt *serve.Runtime, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(rt.Running()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d invocations running, want %d", len(rt.Running()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCancelBeforeRun: a context that ended before an executor was free
// cancels the call before it runs; a budget for an unknown program is refused.
func TestCancelBeforeRun(t *testing.T) {
	rt := cancelRuntime(t, serve.Options{JIT: 1, Budget: -1})
	done := make(chan error, 1)
	go func() { _, err := rt.Invoke(context.Background(), "spin", 0); done <- err }()
	waitRunning(t, rt, 1)
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	_, err := rt.Invoke(ctx, "add1", 1) // waits for the only executor
	require.ErrorIs(t, err, abi.ErrCancelled)
	var ce *cancel.Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, -1, ce.Insn)
	assert.Contains(t, err.Error(), "program add1 cancelled before it ran: the caller's context ended")
	rt.Cancel("")
	requireCancelled(t, <-done, "spin", cancel.Request)

	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	defer h.Close()
	insns, err := bytecode.Assemble(endless["add1"])
	require.NoError(t, err)
	_, err = serve.NewWith(h, map[string]asm.Instructions{"add1": insns},
		serve.Options{JIT: 1, Budgets: map[string]time.Duration{"nope": time.Second}})
	assert.ErrorContains(t, err, `budget for "nope": no such program`)
}

// TestResponsiveWhileLooping: with every executor in an endless loop, a short
// program invoked meanwhile returns once the loops' budget frees an
// executor: within the budget and the stop bound, never later.
func TestResponsiveWhileLooping(t *testing.T) {
	const budget = 100 * time.Millisecond
	rt := cancelRuntime(t, serve.Options{JIT: 1, Interpreted: 1, Budget: budget})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = rt.Invoke(context.Background(), "spin", 0) })
	}
	waitRunning(t, rt, 2)
	start := time.Now()
	r0, err := rt.Invoke(context.Background(), "add1", 1)
	took := time.Since(start)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)
	assert.Less(t, took, budget+time.Second, "the short call waited %v", took) // generous: 2 cores, -race
	wg.Wait()
	for _, err := range errs {
		assert.True(t, errors.Is(err, abi.ErrCancelled), "%v", err)
	}
	t.Logf("a short call behind two endless loops with a %v budget returned after %v", budget, took)
}

const roleSpinner = "serve-spinner"

// TestCancelOnDisconnect: a process that dies with calls in flight takes them
// with it: the runtime cancels them (cause Disconnect) and the next caller
// gets an executor at once, not after the endless calls (no budget here).
func TestCancelOnDisconnect(t *testing.T) {
	if testutil.Role() == roleSpinner {
		c, err := userspace.Dial(os.Getenv("KFLEX_SOCKET"), nil)
		require.NoError(t, err)
		for range 4 { // more than the executors: some wait for one
			go c.Invoke("spin", 0)
		}
		select {} // until the parent kills us
	}
	rt := cancelRuntime(t, serve.Options{JIT: 1, Interpreted: 1, Budget: -1})
	sock := serveOn(t, rt)

	cmd := testutil.Child(t, t.Name(), roleSpinner, "KFLEX_SOCKET="+sock)
	require.NoError(t, cmd.Start())
	waitRunning(t, rt, 2)
	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	start := time.Now()
	r0, err := rt.Invoke(context.Background(), "add1", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)
	took := time.Since(start)
	assert.Less(t, took, 2*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for len(rt.Running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	assert.Empty(t, rt.Running(), "the dead process's calls still run")
	t.Logf("after the client's death the next call returned in %v", took)
}

// TestClientCancels: a client's context reaches the extension running for
// it (InvokeContext sends the cancel), and an operator's CancelProgram stops
// every running invocation of a program, whoever made it.
func TestClientCancels(t *testing.T) {
	rt := cancelRuntime(t, serve.Options{JIT: 1, Interpreted: 1, Budget: -1})
	sock := serveOn(t, rt)
	c, err := userspace.Dial(sock, nil)
	require.NoError(t, err)
	defer c.Close()

	ctx, stop := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer stop()
	start := time.Now()
	_, err = c.InvokeContext(ctx, "spin", 0)
	var ie *userspace.InvokeError
	require.ErrorAs(t, err, &ie)
	assert.Contains(t, ie.Message, "program spin cancelled at instruction")
	assert.Contains(t, ie.Message, "the caller's context ended")
	assert.Less(t, time.Since(start), 5*time.Second)

	_, err = c.InvokeContext(ctx, "spin", 0) // ended already: nothing sent
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := c.Invoke("spin", 0); errs <- err }()
	}
	waitRunning(t, rt, 2)
	op, err := userspace.Dial(sock, nil) // the operator's own connection
	require.NoError(t, err)
	defer op.Close()
	n, err := op.CancelProgram("spin")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	for range 2 {
		err := <-errs
		require.ErrorAs(t, err, &ie)
		assert.Contains(t, ie.Message, "cancelled on request")
	}
	n, err = op.CancelProgram("spin")
	require.NoError(t, err)
	assert.Zero(t, n, "nothing runs now")
	_, err = op.CancelProgram("spinn") // a typo is an error, not "0 cancelled"
	assert.ErrorIs(t, err, userspace.ErrNoSuchProgram)
	assert.ErrorContains(t, err, `no program "spinn"`)
	r0, err := c.Invoke("add1", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)
}

// TestExecutorRejoinsPool: an executor cancelled while it waits behind a
// live waiter leaves its node in the queue, where a stand-in of the
// runtime's waits in its place (not abandoned); with no spare node (one node
// per process) it leaves the pool — invocations then find no executor — and
// comes back once the head position reaches the stand-in, which hands it on
// and frees the node.
func TestExecutorRejoinsPool(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20, NodesPerProc: 1}})
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	rt := runtimeOn(t, h, map[string]string{"lockonce": mcs.LockOnceProgram}, serve.Options{JIT: 1, Budget: -1})
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	defer p.Detach()
	off, err := h.Alloc(8)
	require.NoError(t, err)
	*h.Uint64(off) = 0
	m, err := p.Mutex(off)
	require.NoError(t, err)
	tail := func() uint32 { return mcs.DecodeWord(atomic.LoadUint64(h.Uint64(off))).Tail }

	require.NoError(t, m.Lock()) // the holder
	waited := make(chan error, 1)
	go func() { // a live waiter, the queue's head
		err := m.Lock()
		if err == nil {
			m.Unlock()
		}
		waited <- err
	}()
	require.Eventually(t, func() bool { return tail() != 0 }, 10*time.Second, 100*time.Microsecond)
	head := tail()

	ctx, cancel := context.WithCancel(context.Background())
	invoked := make(chan error, 1)
	go func() { _, err := rt.Invoke(ctx, "lockonce", h.Base()+off); invoked <- err }()
	require.Eventually(t, func() bool { return tail() != head }, 10*time.Second, 100*time.Microsecond, "the extension queues behind the waiter")
	cancel()
	require.ErrorIs(t, <-invoked, abi.ErrCancelled)
	assert.Equal(t, 1, rt.Stuck(), "its node still queued behind a live waiter and no spare: the executor is out of the pool")
	assert.Contains(t, []uint32{mcs.NodeWaiting, mcs.NodeParked}, p.QueueNode(tail()-1).State, "the node waits, stood in for")
	short, done := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = rt.Invoke(short, "lockonce", h.Base()+off)
	done()
	require.ErrorIs(t, err, abi.ErrCancelled, "no executor to run it")

	m.Unlock() // the waiter takes the lock and grants the stand-in, which ends the queue and frees the node
	require.NoError(t, <-waited)
	require.Eventually(t, func() bool { return rt.Stuck() == 0 }, 5*time.Second, time.Millisecond, "the executor rejoins the pool")
	r0, err := rt.Invoke(context.Background(), "lockonce", h.Base()+off)
	require.NoError(t, err)
	assert.Zero(t, r0)
	assert.Zero(t, atomic.LoadUint64(h.Uint64(off)), "the lock is free")
}
