package serve

import (
	"context"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/internal/sys/wire"
)

// serveConn greets an attached process and serves its requests until it
// disconnects or the runtime closes. Requests run concurrently, at most one
// per executor for each connection: more could not run sooner, and would
// only queue for executors ahead of other connections' calls, and a process
// cannot make the runtime start goroutines without bound. Past the bound the
// runtime stops reading, and the process's writes wait on the socket.
func (rt *Runtime) serveConn(c *net.UnixConn) {
	defer func() {
		rt.mu.Lock()
		if p := rt.conns[c]; p.pidfd >= 0 {
			unix.Close(p.pidfd)
		}
		delete(rt.conns, c)
		rt.mu.Unlock()
		c.Close()
	}()
	p, err := identify(c)
	if err != nil {
		rt.tracef("kflex runtime: refusing a connection: %v\n", err)
		return
	}
	rt.mu.Lock()
	rt.conns[c] = p
	rt.mu.Unlock()
	hello, oob := wire.EncodeHello(wire.Hello{HeapSize: rt.h.Size(), Kind: rt.kind}, rt.shareFD)
	if _, _, err := c.WriteMsgUnix(hello, oob, nil); err != nil {
		return
	}
	w := &resultWriter{c: c}
	slots := make(chan struct{}, len(rt.all))
	defer func() { // every call answered (or its answer failed) before c closes
		for range cap(slots) {
			slots <- struct{}{}
		}
	}()
	// The process's calls end with it: when it goes away, whatever it
	// started is cancelled (cancel.Disconnect), before the wait above.
	ctx, disconnect := context.WithCancelCause(context.Background())
	defer disconnect(cancel.ErrDisconnect)
	buf := make([]byte, wire.MaxRequest+1)
	for {
		n, err := c.Read(buf)
		if err != nil || n == 0 {
			return
		}
		req, err := wire.DecodeRequest(buf[:n])
		if err != nil {
			w.write(req.ID, 0, err)
			if req.ID == 0 {
				// No id to answer: the process and the runtime no longer agree
				// on what is in flight.
				rt.tracef("kflex runtime: process %d: %v: closing its connection\n", p.pid, err)
				return
			}
			continue
		}
		slots <- struct{}{}
		go func() {
			defer func() { <-slots }()
			r0, err := rt.Invoke(ctx, req.Name, req.Arg)
			w.write(req.ID, r0, err)
		}()
	}
}

// resultWriter writes one connection's results, one at a time.
type resultWriter struct {
	mu sync.Mutex
	c  *net.UnixConn
}

// write answers request id. A failed write is not reported: it means the
// process is gone, which the connection's reader sees too.
func (w *resultWriter) write(id, r0 uint64, err error) {
	b := wire.EncodeResult(id, r0, err)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c.Write(b)
}

func (rt *Runtime) tracef(format string, args ...any) {
	rt.traceMu.Lock()
	defer rt.traceMu.Unlock()
	fmt.Fprintf(rt.trace, format, args...)
}
