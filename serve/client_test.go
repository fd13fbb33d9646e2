package serve_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/sys/wire"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// TestClientConcurrent shares one Client among many goroutines, each invoking
// add1 with arguments of its own and checking every result: a result handed to
// the wrong caller shows as a wrong value.
func TestClientConcurrent(t *testing.T) {
	const goroutines, calls = 16, 1000
	f := start(t)
	c, err := userspace.Dial(f.socket, nil)
	require.NoError(t, err)
	defer c.Close()
	var wg sync.WaitGroup
	wrong := make([]int, goroutines)
	errs := make([]error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range calls {
				arg := uint64(g)<<32 | uint64(i)
				r0, err := c.Invoke("add1", arg)
				if err != nil {
					errs[g] = err
					return
				}
				if r0 != arg+1 {
					wrong[g]++
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for g := range goroutines {
		require.NoError(t, errs[g], "goroutine %d", g)
		total += wrong[g]
	}
	require.Zero(t, total, "%d of %d results were another call's", total, goroutines*calls)
}

// TestPendingCallsFailOnClose: calls waiting for a runtime that closes get
// ErrRuntimeGone at once, even while the runtime itself still waits for the
// extensions it runs (they spin on a lock this test holds).
func TestPendingCallsFailOnClose(t *testing.T) {
	const calls = 8
	f := start(t)
	c, lockPtr, mu := f.dialLock(t)
	require.NoError(t, mu.Lock())
	errs := make(chan error, calls)
	for range calls {
		go func() {
			_, err := c.Invoke("counter", c.Canonical(lockPtr))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // the calls reach the runtime; two run, spinning
	closed := make(chan error, 1)
	go func() { closed <- f.rt.Close() }()
	for i := range calls {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, userspace.ErrRuntimeGone, "call %d", i)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d calls still waiting 10s after the runtime closed", calls-i)
		}
	}
	mu.Unlock()
	require.NoError(t, <-closed)
}

// rawConn attaches to the runtime at socket without a Client, to send it
// what a Client would not.
func rawConn(t *testing.T, socket string) *net.UnixConn {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	buf, oob := wire.HelloBuffers()
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	require.NoError(t, err)
	_, fd, err := wire.DecodeHello(buf[:n], oob[:oobn])
	require.NoError(t, err)
	unix.Close(fd)
	return c
}

// TestMalformedRequests: the runtime answers a request it cannot run with a
// failure for that request's id and goes on serving; one too short to carry
// an id gets a failure with id 0, and the connection is closed.
func TestMalformedRequests(t *testing.T) {
	f := start(t)
	c := rawConn(t, f.socket)
	exchange := func(req []byte) (wire.Result, error) {
		_, err := c.Write(req)
		require.NoError(t, err)
		buf := make([]byte, wire.MaxResult+1)
		n, err := c.Read(buf)
		if err != nil {
			return wire.Result{}, err
		}
		return wire.DecodeResult(buf[:n])
	}
	unknownOp, err := wire.EncodeInvoke(5, "add1", 0)
	require.NoError(t, err)
	binary.LittleEndian.PutUint32(unknownOp, 9)
	r, err := exchange(unknownOp)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), r.ID)
	assert.ErrorContains(t, r.Err, "unknown op 9 in request 5")

	noName, _ := wire.EncodeInvoke(6, "x", 0)
	r, err = exchange(noName[:len(noName)-1])
	require.NoError(t, err)
	assert.Equal(t, uint64(6), r.ID)
	assert.ErrorContains(t, r.Err, "request 6: a name of 0 bytes")

	good, _ := wire.EncodeInvoke(7, "add1", 41)
	r, err = exchange(good)
	require.NoError(t, err)
	assert.Equal(t, wire.Result{ID: 7, R0: 42}, r, "the connection still serves")

	r, err = exchange([]byte{1, 0, 0})
	require.NoError(t, err)
	assert.Equal(t, uint64(0), r.ID)
	assert.ErrorContains(t, r.Err, "request of 3 bytes")
	n, err := c.Read(make([]byte, 64))
	assert.True(t, n == 0 || err != nil, "the runtime closed the connection")
}

// TestLongCallRunsBeside: a call that arrives while another call of the same
// connection runs long (it spins on a lock this test holds) still runs,
// beside it, and returns. The runtime runs a lone call inline on the
// connection's reader; its watchdog hands the reading on when that call runs
// long. Twice: with the watchdog awake, and after it has gone to sleep.
func TestLongCallRunsBeside(t *testing.T) {
	f := start(t)
	c, lockPtr, mu := f.dialLock(t)
	for _, pause := range []time.Duration{0, 200 * time.Millisecond} {
		time.Sleep(pause)
		mu.Lock()
		long := make(chan error, 1)
		go func() {
			_, err := c.Invoke("counter", c.Canonical(lockPtr))
			long <- err
		}()
		time.Sleep(20 * time.Millisecond) // it reaches the runtime, which runs it inline
		short := make(chan error, 1)
		go func() {
			r0, err := c.Invoke("add1", 41)
			if err == nil && r0 != 42 {
				err = fmt.Errorf("add1(41) = %d", r0)
			}
			short <- err
		}()
		select {
		case err := <-short:
			assert.NoError(t, err, "after a pause of %v", pause)
		case <-time.After(10 * time.Second):
			mu.Unlock()
			t.Fatalf("after a pause of %v: a call still waits 10s behind one that runs long", pause)
		}
		select {
		case err := <-long:
			t.Errorf("the long call returned (%v) while its lock was held", err)
		default:
		}
		mu.Unlock()
		require.NoError(t, <-long)
	}
}

// BenchmarkInvokeConcurrent is BenchmarkInvoke for four goroutines sharing
// one Client: the time per call is the connection's throughput.
func BenchmarkInvokeConcurrent(b *testing.B) {
	f := start(b)
	c, err := userspace.Dial(f.socket, nil)
	require.NoError(b, err)
	defer c.Close()
	b.SetParallelism(max(1, 4/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Invoke("empty", 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "µs/invoke")
}

// dialLock attaches a client to f's runtime, closed when the test ends, and
// returns it with f's lock: its address in the client's view, and a handle.
func (f *fixture) dialLock(t *testing.T) (*userspace.Client, userspace.Ptr, *mcs.Mutex) {
	c, err := userspace.Dial(f.socket, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	lockPtr := c.Base() + userspace.Ptr(f.lock)
	mu, err := c.Mutex(lockPtr)
	require.NoError(t, err)
	return c, lockPtr, mu
}

// TestInvokeErrorCodes: each kind of failure reaches a client with its code,
// which errors.Is tests against userspace's sentinels, and in process the
// same missing program matches serve.ErrNoProgram.
func TestInvokeErrorCodes(t *testing.T) {
	rt, _ := runtimeOf(t, map[string]string{
		"add1": "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit",
		"spin": "mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit",
		// An atomic add at a misaligned heap address faults.
		"misaligned": "mov %r1, 1\nlock add [%r3+1], %r1\nmov %r0, 0\nexit",
	}, serve.Options{JIT: 1, Budget: 20 * time.Millisecond})
	sock := serveOn(t, rt)
	c, err := userspace.Dial(sock, nil)
	require.NoError(t, err)
	defer c.Close()
	sentinels := map[userspace.Code]error{userspace.CodeFailed: userspace.ErrFailed, userspace.CodeNoProgram: userspace.ErrNoSuchProgram,
		userspace.CodeRejected: userspace.ErrRejected, userspace.CodeCancelled: userspace.ErrCancelled}
	check := func(err error, code userspace.Code, msg string) {
		t.Helper()
		var ie *userspace.InvokeError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, code, ie.Code)
		assert.Contains(t, ie.Message, msg)
		for c, s := range sentinels {
			assert.Equal(t, c == code, errors.Is(err, s), "%v is %v", err, s)
		}
	}
	_, err = c.Invoke("nope", 0)
	check(err, userspace.CodeNoProgram, `no program "nope"`)
	_, err = c.Invoke("spin", 0)
	check(err, userspace.CodeCancelled, "its 20ms time budget ran out")
	_, err = c.Invoke("misaligned", 0)
	check(err, userspace.CodeFailed, "misaligned atomic access")
	r0, err := c.Invoke("add1", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)

	raw := rawConn(t, sock)
	req, err := wire.EncodeInvoke(5, "add1", 0)
	require.NoError(t, err)
	binary.LittleEndian.PutUint32(req, 9) // an op no runtime serves
	_, err = raw.Write(req)
	require.NoError(t, err)
	buf := make([]byte, wire.MaxResult+1)
	n, err := raw.Read(buf)
	require.NoError(t, err)
	res, err := wire.DecodeResult(buf[:n])
	require.NoError(t, err)
	check(res.Err, userspace.CodeRejected, "unknown op 9 in request 5")

	_, err = rt.Invoke(context.Background(), "nope", 0)
	assert.ErrorIs(t, err, serve.ErrNoProgram)
	assert.ErrorIs(t, err, userspace.ErrNoSuchProgram, "the same sentinel")
	assert.EqualError(t, err, `no program "nope"`)
}
