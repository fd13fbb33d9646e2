package userspace

import (
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/wire"
)

// fakeRuntime listens at a socket, greets one process with a real heap, and
// then lets serve play the runtime's part on the connection. It returns the
// socket; the test's end closes everything and waits for serve.
func fakeRuntime(t *testing.T, serve func(c *net.UnixConn)) string {
	h, err := heap.CreateMemfd("fake-runtime", &heap.Options{Params: heap.Params{Size: 1 << 20}})
	require.NoError(t, err)
	sock := filepath.Join(t.TempDir(), "sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		hello, oob := wire.EncodeHello(wire.Hello{HeapSize: h.Size(), Kind: wire.HeapFile}, h.Fd())
		if _, _, err := c.WriteMsgUnix(hello, oob, nil); err == nil {
			serve(c)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		h.Close()
	})
	return sock
}

// readRequests reads n requests and returns their ids.
func readRequests(t *testing.T, c *net.UnixConn, n int) []uint64 {
	var ids []uint64
	buf := make([]byte, wire.MaxRequest+1)
	for range n {
		m, err := c.Read(buf)
		if !assert.NoError(t, err) {
			return ids
		}
		req, err := wire.DecodeRequest(buf[:m])
		assert.NoError(t, err)
		ids = append(ids, req.ID)
	}
	return ids
}

// invokeAll starts n concurrent calls and returns their errors once all end,
// failing the test if any is still waiting after ten seconds.
func invokeAll(t *testing.T, c *Client, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = c.Invoke("prog", uint64(i)) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("calls still waiting 10s after their connection failed")
	}
	return errs
}

// TestPendingCallsRuntimeGone: a runtime that reads requests and closes the
// connection without answering leaves no call waiting: each gets
// ErrRuntimeGone, and so does every later call.
func TestPendingCallsRuntimeGone(t *testing.T) {
	const calls = 8
	sock := fakeRuntime(t, func(c *net.UnixConn) { readRequests(t, c, calls) })
	c, err := Dial(sock, nil)
	require.NoError(t, err)
	defer c.Close()
	for i, err := range invokeAll(t, c, calls) {
		assert.ErrorIs(t, err, ErrRuntimeGone, "call %d", i)
	}
	_, err = c.Invoke("prog", 0)
	assert.ErrorIs(t, err, ErrRuntimeGone)
}

// TestCloseFailsPendingCalls: Close ends calls the runtime never answers.
func TestCloseFailsPendingCalls(t *testing.T) {
	const calls = 4
	release := make(chan struct{})
	sock := fakeRuntime(t, func(*net.UnixConn) { <-release })
	defer close(release)
	c, err := Dial(sock, nil)
	require.NoError(t, err)
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := c.Invoke("prog", uint64(i))
			errs <- err
		}()
	}
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == calls
	}, 10*time.Second, time.Millisecond, "the calls never became pending")
	require.NoError(t, c.Close())
	for range calls {
		assert.ErrorIs(t, <-errs, net.ErrClosed)
	}
	assert.ErrorIs(t, c.Close(), net.ErrClosed, "closing twice")
}

// TestMalformedResults: a runtime that answers with something other than a
// result of this protocol breaks the connection with ErrMalformed, naming what
// was wrong; no call hangs or gets another call's result.
func TestMalformedResults(t *testing.T) {
	unknownStatus := wire.EncodeResult(1, 7, nil)
	binary.LittleEndian.PutUint32(unknownStatus, 9)
	for name, tc := range map[string]struct {
		reply []byte
		msg   string
	}{
		"short":          {[]byte{0, 0, 0}, "result of 3 bytes"},
		"unknown id":     {wire.EncodeResult(99, 0, nil), "result for request 99, which no call is waiting for"},
		"unknown status": {unknownStatus, "unknown status 9"},
		"too long":       {make([]byte, wire.MaxResult+1), fmt.Sprintf("result 0 of %d bytes, want at most %d", wire.MaxResult+1, wire.MaxResult)},
		"too much data":  {wire.AppendData(nil, 1, 0, make([]byte, wire.MaxData+1)), fmt.Sprintf("result of %d bytes", wire.MaxPacket+1)},
		"refused":        {wire.EncodeResult(0, 0, assert.AnError), "refused a request"},
	} {
		t.Run(name, func(t *testing.T) {
			sock := fakeRuntime(t, func(c *net.UnixConn) {
				readRequests(t, c, 1)
				c.Write(tc.reply)
			})
			c, err := Dial(sock, nil)
			require.NoError(t, err)
			defer c.Close()
			err = invokeAll(t, c, 1)[0]
			assert.ErrorIs(t, err, ErrMalformed)
			assert.ErrorContains(t, err, tc.msg)
			_, err = c.Invoke("prog", 0)
			assert.ErrorIs(t, err, ErrMalformed, "a later call")
		})
	}
}

// TestResultsOutOfOrder: results that come in another order than their
// requests each reach their own call, whichever call is reading: the reader
// hands the others' results over and, once it has its own, passes the
// reading on to a call still waiting.
func TestResultsOutOfOrder(t *testing.T) {
	const calls = 8
	sock := fakeRuntime(t, func(c *net.UnixConn) {
		var reqs []wire.Request
		buf := make([]byte, wire.MaxRequest+1)
		for range calls {
			n, err := c.Read(buf)
			if !assert.NoError(t, err) {
				return
			}
			req, err := wire.DecodeRequest(buf[:n])
			assert.NoError(t, err)
			reqs = append(reqs, req)
		}
		for i := range reqs {
			req := reqs[len(reqs)-1-i]
			c.Write(wire.EncodeResult(req.ID, req.Arg+1, nil))
		}
	})
	c, err := Dial(sock, nil)
	require.NoError(t, err)
	defer c.Close()
	r0s := make([]uint64, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			var err error
			r0s[i], err = c.Invoke("prog", uint64(100+i))
			assert.NoError(t, err, "call %d", i)
		})
	}
	wg.Wait()
	for i, r0 := range r0s {
		assert.Equal(t, uint64(101+i), r0, "call %d", i)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.Empty(t, c.pending)
	assert.False(t, c.reading, "the last call gave up the reading")
}

// TestStatusOldRuntime: a runtime that predates the status request answers
// it as an unknown op (as DecodeRequest makes it answer), which Status
// reports as ErrVersion; one that answers with data that is not a status is
// malformed.
func TestStatusOldRuntime(t *testing.T) {
	answer := func(reply func(req wire.Request, err error) []byte) string {
		return fakeRuntime(t, func(c *net.UnixConn) {
			buf := make([]byte, wire.MaxRequest+1)
			n, err := c.Read(buf)
			require.NoError(t, err)
			b := buf[:n]
			req, _ := wire.DecodeRequest(b)
			req.ID = binary.LittleEndian.Uint64(b[4:])
			binary.LittleEndian.PutUint32(b, 99) // an op the runtime does not know, as op 4 is to an old one
			_, err = wire.DecodeRequest(b)
			c.Write(reply(req, err))
		})
	}
	sock := answer(func(req wire.Request, err error) []byte { return wire.EncodeResult(req.ID, 0, err) })
	c, err := Dial(sock, nil)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Status()
	assert.ErrorIs(t, err, ErrVersion)
	assert.ErrorContains(t, err, "does not answer status requests")

	sock = answer(func(req wire.Request, _ error) []byte { return wire.AppendData(nil, req.ID, 0, []byte("{")) })
	c2, err := Dial(sock, nil)
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.Status()
	assert.ErrorIs(t, err, ErrMalformed)
}
