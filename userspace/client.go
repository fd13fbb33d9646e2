package userspace

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/kflex-go/kflex/internal/sys/wire"
)

// Client is a process attached to a running extension runtime (kflex serve):
// it shares the runtime's heap and invokes its extensions.
//
// A Client is safe for concurrent use: any number of goroutines may Invoke at
// once, each call waiting for its own result while the runtime runs the
// calls side by side. One goroutine per Client reads the runtime's results
// and hands each to the call whose id it carries; Close ends it.
type Client struct {
	*Heap
	conn *net.UnixConn
	path string

	writeMu sync.Mutex // requests are written whole, one at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan wire.Result // calls waiting, by request id
	broken  error                       // why the connection is unusable, once it is
	closed  bool

	readerDone chan struct{}
}

func newClient(h *Heap, conn *net.UnixConn, path string) *Client {
	c := &Client{Heap: h, conn: conn, path: path, pending: map[uint64]chan wire.Result{}, readerDone: make(chan struct{})}
	go c.read()
	return c
}

// Invoke runs extension name in the runtime with argument arg and returns its
// r0. An extension's failure is an *InvokeError; a runtime that goes away
// before answering gives ErrRuntimeGone, and one that breaks the protocol
// ErrMalformed.
func (c *Client) Invoke(name string, arg uint64) (uint64, error) {
	done := make(chan wire.Result, 1)
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return 0, c.broken
	}
	c.nextID++
	id := c.nextID
	req, err := wire.EncodeInvoke(id, name, arg)
	if err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.pending[id] = done
	c.mu.Unlock()

	c.writeMu.Lock()
	_, err = c.conn.Write(req)
	c.writeMu.Unlock()
	if err != nil && c.forget(id) {
		// Not sent (a packet goes whole or not at all): nothing will answer.
		return 0, c.failure(fmt.Errorf("%w (%s) sending %s: %v", ErrRuntimeGone, c.path, name, err))
	}
	r := <-done
	return r.R0, r.Err
}

// forget removes request id from the pending calls, reporting whether it was
// still there (the reader has not answered or failed it).
func (c *Client) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	return ok
}

// failure is err, or, if the connection broke meanwhile, the reason it
// broke: a failed write is usually the runtime closing the connection, which
// the reader explains better.
func (c *Client) failure(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return c.broken
	}
	if c.closed {
		return fmt.Errorf("kflex client (%s): %w", c.path, net.ErrClosed)
	}
	return err
}

// read hands each result to the call waiting for it, until the connection
// ends or breaks the protocol; then it fails every pending call and every
// later one.
func (c *Client) read() {
	defer close(c.readerDone)
	buf := make([]byte, wire.MaxResult+1)
	for {
		n, err := c.conn.Read(buf)
		if err != nil || n == 0 {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				c.fail(fmt.Errorf("kflex client (%s): %w", c.path, net.ErrClosed))
			} else {
				c.fail(fmt.Errorf("%w (%s): %v", ErrRuntimeGone, c.path, readError(err)))
			}
			return
		}
		r, err := wire.DecodeResult(buf[:n])
		if err != nil {
			c.fail(fmt.Errorf("kflex runtime at %s: %w", c.path, err))
			return
		}
		c.mu.Lock()
		done, ok := c.pending[r.ID]
		delete(c.pending, r.ID)
		c.mu.Unlock()
		if !ok {
			c.fail(unexpected(c.path, r))
			return
		}
		done <- r
	}
}

// unexpected is the error for result r, which no call is waiting for.
func unexpected(path string, r wire.Result) error {
	if r.ID == 0 && r.Err != nil {
		// The runtime could not read one of our requests, and says why.
		return fmt.Errorf("kflex runtime at %s refused a request: %w: %v", path, ErrMalformed, r.Err)
	}
	return fmt.Errorf("kflex runtime at %s: %w: result for request %d, which no call is waiting for", path, ErrMalformed, r.ID)
}

func readError(err error) error {
	if err == nil {
		return errors.New("connection closed")
	}
	return err
}

// fail marks the connection broken by err and gives err to every pending call.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = err
	}
	for id, done := range c.pending {
		done <- wire.Result{ID: id, Err: c.broken}
		delete(c.pending, id)
	}
}

// Close detaches from the heap and the runtime. Calls still waiting for a
// result fail with an error wrapping net.ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("kflex client (%s): %w", c.path, net.ErrClosed)
	}
	c.closed = true
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.readerDone // its Read fails now
	if herr := c.Heap.Close(); err == nil {
		err = herr
	}
	return err
}
