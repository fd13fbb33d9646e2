package userspace

import (
	"bytes"
	"context"
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
// calls side by side. The Client has no goroutine of its own: one waiting
// call at a time is the reader. It reads the connection, hands each result
// to the call whose id it carries, and when its own result comes, passes the
// reading on to a call still waiting. A call alone in flight thus reads its
// own result, with no hand-off between goroutines.
type Client struct {
	*Heap
	conn *net.UnixConn
	path string

	writeMu sync.Mutex // requests are written whole, one at a time

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan wire.Result // calls waiting, by request id
	reading bool                        // a call holds the reader role, or is being handed it
	broken  error                       // why the connection is unusable, once it is
	closed  bool

	rbuf []byte // the reader's buffer, used only by the call holding the role
}

// errLead, sent to a waiting call in place of its result, hands it the
// reader role.
var errLead = errors.New("kflex client: read the connection")

// calls holds the channels waiting calls receive on, each empty.
var calls = sync.Pool{New: func() any { return make(chan wire.Result, 1) }}

func newClient(h *Heap, conn *net.UnixConn, path string) *Client {
	return &Client{Heap: h, conn: conn, path: path, pending: map[uint64]chan wire.Result{},
		rbuf: make([]byte, wire.MaxPacket+1)}
}

// Invoke runs extension name in the runtime with argument arg and returns its
// r0. An invocation's failure is an *InvokeError, which errors.Is matches
// against its kind (ErrNoSuchProgram, ErrCancelled, ErrRejected, ErrFailed);
// a runtime that goes away before answering gives ErrRuntimeGone, and one
// that breaks the protocol ErrMalformed.
func (c *Client) Invoke(name string, arg uint64) (uint64, error) {
	return c.InvokeContext(context.Background(), name, arg)
}

// InvokeContext is Invoke under ctx: when ctx ends before the result comes,
// the runtime is told to cancel the call, which then ends at the extension's
// next cancellation point with a cancellation (an *InvokeError matching
// ErrCancelled, whose message names the instruction and the cause). A ctx that ended before the call is
// an error wrapping ctx's, and nothing is sent.
func (c *Client) InvokeContext(ctx context.Context, name string, arg uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("invoke %s: %w", name, err)
	}
	r, err := c.do(wire.Request{Op: wire.OpInvoke, Name: name, Arg: arg}, func(id uint64) func() bool {
		if ctx.Done() == nil {
			return nil
		}
		return context.AfterFunc(ctx, func() { c.send(wire.Request{Op: wire.OpCancel, Arg: id}) })
	})
	if err != nil {
		return 0, err
	}
	return r.R0, r.Err
}

// CancelProgram asks the runtime to cancel every running invocation of
// extension name, whichever process made it, and returns how many it
// cancelled: an operator's request (kflex cancel). A name the runtime does
// not serve is an error matching ErrNoSuchProgram.
func (c *Client) CancelProgram(name string) (int, error) {
	r, err := c.do(wire.Request{Op: wire.OpCancelProgram, Name: name}, nil)
	if err == nil {
		err = r.Err
	}
	return int(r.R0), err
}

// Status describes what a runtime runs (Client.Status).
type Status = wire.Status

// ProgramStatus and ProcessStatus are the entries of a Status.
type (
	ProgramStatus = wire.ProgramStatus
	ProcessStatus = wire.ProcessStatus
)

// Status asks the runtime what it runs: its programs, with their invocations
// and errors so far, and the processes connected to it, this one included
// (kflex status). A runtime older than this request is an error wrapping
// ErrVersion.
func (c *Client) Status() (Status, error) {
	r, err := c.do(wire.Request{Op: wire.OpStatus}, nil)
	if err == nil {
		err = r.Err
	}
	switch {
	case wire.IsUnknownOp(err):
		return Status{}, fmt.Errorf("%w: the runtime at %s does not answer status requests (it is older than them): %v", ErrVersion, c.path, err)
	case err != nil:
		return Status{}, fmt.Errorf("status of the runtime at %s: %w", c.path, err)
	case r.Data == nil:
		return Status{}, fmt.Errorf("status of the runtime at %s: %w: a result without data", c.path, ErrMalformed)
	}
	s, err := wire.DecodeStatus(r.Data)
	if err != nil {
		return Status{}, fmt.Errorf("status of the runtime at %s: %w", c.path, err)
	}
	return s, nil
}

// Global finds the global variable name of the runtime's C extensions (see
// include/kflex.h): it lives in the heap, where the runtime allocated and
// initialised it when it loaded their object, and this is its address in
// this process's view. size is how many bytes the caller will access there
// (its Go type's size, say): a smaller global is an error, as is an unknown
// name (an *InvokeError matching ErrNoSuchGlobal, listing the globals there
// are). Names are at most 64 bytes (wire.MaxNameLen). Globals live as long
// as the runtime that loaded them.
func (c *Client) Global(name string, size uint64) (Ptr, error) {
	r, err := c.do(wire.Request{Op: wire.OpGlobal, Name: name, Arg: size}, nil)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		return 0, err
	}
	return c.Local(r.R0), nil
}

// do sends r with the next request id and waits for its result. sent, if
// not nil, is called with the id once r is on its way, and the func it
// returns (if any) when the result is in.
func (c *Client) do(r wire.Request, sent func(id uint64) func() bool) (wire.Result, error) {
	var b [wire.MaxRequest]byte
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return wire.Result{}, c.broken
	}
	c.nextID++
	r.ID = c.nextID
	req, err := wire.AppendRequest(b[:0], r)
	if err != nil {
		c.mu.Unlock()
		return wire.Result{}, err
	}
	done := calls.Get().(chan wire.Result)
	c.pending[r.ID] = done
	c.mu.Unlock()

	c.writeMu.Lock()
	_, err = c.conn.Write(req)
	c.writeMu.Unlock()
	if err != nil && c.forget(r.ID, done) {
		// Not sent (a packet goes whole or not at all): nothing will answer.
		calls.Put(done)
		return wire.Result{}, c.failure(fmt.Errorf("%w (%s) sending %s: %v", ErrRuntimeGone, c.path, r.Name, err))
	}
	if sent != nil {
		if stop := sent(r.ID); stop != nil {
			defer stop()
		}
	}
	res := c.wait(r.ID, done)
	calls.Put(done)
	return res, nil
}

// send sends a request that gets no result (OpCancel), with an id of its
// own. A failure is left to the calls that wait for results to see.
func (c *Client) send(r wire.Request) {
	var b [wire.MaxRequest]byte
	c.mu.Lock()
	c.nextID++
	r.ID = c.nextID
	c.mu.Unlock()
	req, err := wire.AppendRequest(b[:0], r)
	if err != nil {
		return
	}
	c.writeMu.Lock()
	c.conn.Write(req)
	c.writeMu.Unlock()
}

// wait returns call id's result: read by this call itself if no other call
// is reading, else handed over by the reader (which may instead hand this
// call the reader role).
func (c *Client) wait(id uint64, done chan wire.Result) wire.Result {
	c.mu.Lock()
	_, waiting := c.pending[id]
	lead := waiting && !c.reading
	if lead {
		c.reading = true
	}
	c.mu.Unlock()
	if !lead {
		// Answered already (the reader took the call out of pending), or
		// the reader will answer or hand over the role.
		if r := <-done; r.Err != errLead {
			return r
		}
	}
	return c.read(id, done)
}

// read is the reader: it hands each result to its call until call id's own
// comes, then passes the role on. When the connection ends or breaks the
// protocol, it fails every pending call, itself included, and every later
// one.
func (c *Client) read(id uint64, done chan wire.Result) wire.Result {
	for {
		n, err := c.conn.Read(c.rbuf)
		if err != nil || n == 0 {
			c.fail(fmt.Errorf("%w (%s): %v", ErrRuntimeGone, c.path, readError(err)))
			break
		}
		r, err := wire.DecodeResult(c.rbuf[:n])
		if err != nil {
			c.fail(fmt.Errorf("kflex runtime at %s: %w", c.path, err))
			break
		}
		if r.Data != nil {
			r.Data = bytes.Clone(r.Data) // the next read reuses rbuf
		}
		c.mu.Lock()
		call, ok := c.pending[r.ID]
		delete(c.pending, r.ID)
		if r.ID == id {
			c.passLead()
			c.mu.Unlock()
			return r
		}
		if ok {
			call <- r // never blocks: a pending call's channel is empty
		}
		c.mu.Unlock()
		if !ok {
			c.fail(unexpected(c.path, r))
			break
		}
	}
	return <-done // fail answered this call too
}

// passLead hands the reader role to a pending call, if there is one. The
// caller holds c.mu and the role.
func (c *Client) passLead() {
	for _, call := range c.pending {
		call <- wire.Result{Err: errLead}
		return
	}
	c.reading = false
}

// forget removes call id from the pending calls, reporting whether it was
// still there (no reader has answered or failed it). A reader role handed
// to it meanwhile goes on to another call.
func (c *Client) forget(id uint64, done chan wire.Result) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; !ok {
		return false
	}
	delete(c.pending, id)
	select {
	case <-done: // a pending call's channel holds nothing but errLead
		c.passLead()
	default:
	}
	return true
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
	return err
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

// fail marks the connection broken by err, unless it is already (Close
// marks it first), gives the reason to every pending call and gives up the
// reader role: later calls fail at once, without reading.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = err
	}
	for id, call := range c.pending {
		call <- wire.Result{ID: id, Err: c.broken}
		delete(c.pending, id)
	}
	c.reading = false
}

// Close detaches from the heap and the runtime. Calls still waiting for a
// result fail with an error wrapping net.ErrClosed (the reader's read fails,
// and it fails them all), and so do later calls.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("kflex client (%s): %w", c.path, net.ErrClosed)
	}
	c.closed = true
	if c.broken == nil {
		c.broken = fmt.Errorf("kflex client (%s): %w", c.path, net.ErrClosed)
	}
	c.mu.Unlock()
	err := c.conn.Close()
	if herr := c.Heap.Close(); err == nil {
		err = herr
	}
	return err
}
