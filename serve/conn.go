package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/internal/sys/wire"
)

// serveConn greets an attached process and serves its requests until it
// disconnects or the runtime closes. Requests run concurrently, at most one
// per executor for each connection: more could not run sooner, and would
// only queue for executors ahead of other connections' calls, and a process
// cannot make the runtime start goroutines without bound. Past the bound the
// runtime stops reading, and the process's writes wait on the socket. A
// request that comes while none of the connection's runs is run by the
// goroutine that read it; those that come while it runs start beside it
// once it has run for 5 to 10 ms (see connServer).
func (rt *Runtime) serveConn(c *net.UnixConn) {
	var s *connServer
	defer func() {
		rt.mu.Lock()
		p := rt.conns[c]
		if p.pidfd >= 0 {
			unix.Close(p.pidfd)
		}
		delete(rt.conns, c)
		rt.mu.Unlock()
		c.Close()
		if s != nil {
			rt.gone(p, s.cancelled)
		}
	}()
	p, err := identify(c)
	if err != nil {
		rt.log.Warn("refusing a connection", "err", err)
		return
	}
	rt.mu.Lock()
	rt.conns[c] = p
	rt.mu.Unlock()
	rt.log.Info("process attached", "pid", p.pid, "uid", p.uid)
	rt.restoreHeader("attaching_pid", p.pid) // it maps the heap and checks the header
	hello, oob := wire.EncodeHello(wire.Hello{HeapSize: rt.h.Size(), Kind: rt.kind}, rt.shareFD)
	if _, _, err := c.WriteMsgUnix(hello, oob, nil); err != nil {
		return
	}
	s = &connServer{rt: rt, c: c, pid: p.pid, slots: make(chan struct{}, len(rt.all)),
		rbuf: make([]byte, wire.MaxRequest+1), wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.calls = map[uint64]*call{}
	s.asleep.Store(true)
	s.wg.Add(2)
	go s.watch()
	s.read()
	s.wg.Wait() // every call answered (or its answer failed) before c closes
}

// connServer serves one connection's requests.
//
// One goroutine at a time is the reader. A request that comes while none of
// the connection's is running runs inline, on the reader: a lone caller's
// request goes from the socket to an executor and back with no goroutine
// hand-off. A hand-off would cost that caller some 6 µs of a 10 µs round
// trip on two CPUs: a goroutine readied while a P is idle wakes a thread (a
// futex wake), and that thread then takes socket events the busy one would
// have polled itself. A request that comes while others run runs on a
// goroutine of its own, and the reader reads on.
//
// While a request runs inline nobody reads, so the watchdog keeps it from
// holding the next ones back: a request it sees running at two ticks in a
// row loses the reader role to a new goroutine, which reads the requests
// behind it and runs them beside it. Those wait at most two ticks, and only
// behind a request that runs that long; one that waits for another of its
// connection's calls (through the heap's locks) still gets it run. So one
// connection's requests shorter than a tick run one after another, not on
// several executors at once: for short requests from several goroutines of
// one Client that is faster than a goroutine each (no hand-offs). The
// watchdog ticks only while requests come: idleTicks ticks after the last
// it sleeps, and the reader wakes it for the next, a hand-off that only the
// first request after a pause pays.
type connServer struct {
	rt    *Runtime
	c     *net.UnixConn
	pid   int
	slots chan struct{} // a token per request running
	wg    sync.WaitGroup
	rbuf  []byte // the reader's buffer

	running atomic.Int32  // requests running, inline or not
	seq     atomic.Uint64 // inline requests so far
	inline  atomic.Uint64 // the inline request (its number in seq) while it holds the reader role, else 0
	asleep  atomic.Bool   // the watchdog waits on wake; whoever clears it (CAS) decides who sends
	wake    chan struct{}
	done    chan struct{} // closed when reading ends

	callsMu   sync.Mutex
	calls     map[uint64]*call // in flight, by request id
	gone      bool             // the connection ended: its calls are cancelled (cancel.Disconnect)
	cancelled int              // how many that cancelled; read once the goroutines are done

	wmu  sync.Mutex // results are written whole, one at a time
	wbuf []byte
}

const (
	// takeover is the watchdog's tick. Each tick wakes a thread, which
	// costs a lone caller too: measured on two CPUs, 1 ms ticks made its
	// round trip 1 µs longer in one process and 15 µs (+65%) across two,
	// 5 ms ticks 0.3 µs and 4 µs; longer ticks gained nothing more.
	takeover  = 5 * time.Millisecond
	idleTicks = 20 // ticks without a request before the watchdog sleeps
)

// read is the reader: it reads requests and runs them (see connServer)
// until the connection ends, or until the watchdog takes the reader role
// from the request it runs inline.
func (s *connServer) read() {
	defer s.wg.Done()
	for {
		n, err := s.c.Read(s.rbuf)
		if err != nil || n == 0 {
			s.end()
			return
		}
		req, err := wire.DecodeRequest(s.rbuf[:n])
		if err != nil {
			s.write(req.ID, 0, err)
			if req.ID == 0 {
				// No id to answer: the process and the runtime no longer agree
				// on what is in flight.
				s.rt.log.Warn("closing a connection: a request without an id", "pid", s.pid, "err", err)
				s.end()
				return
			}
			continue
		}
		switch req.Op {
		case wire.OpCancel:
			s.cancelCall(req.Arg)
			continue
		case wire.OpCancelProgram:
			if s.rt.stats[req.Name] == nil {
				s.write(req.ID, 0, noProgram(req.Name)) // as an invocation of it would fail
				continue
			}
			n := s.rt.Cancel(req.Name)
			s.rt.log.Info("cancel requested", "pid", s.pid, "program", req.Name, "cancelled", n)
			s.write(req.ID, uint64(n), nil)
			continue
		case wire.OpStatus:
			s.writeStatus(req.ID)
			continue
		case wire.OpGlobal:
			addr, err := s.rt.globalFor(req.Name, req.Arg)
			s.write(req.ID, addr, err)
			continue
		}
		if !s.takeSlot() {
			s.end()
			return
		}
		c := s.startCall(req)
		if s.running.Add(1) > 1 {
			s.wg.Go(func() { s.run(c) })
			continue
		}
		seq := s.seq.Add(1)
		s.inline.Store(seq)
		if s.asleep.Load() && s.asleep.CompareAndSwap(true, false) {
			s.wake <- struct{}{}
		}
		s.run(c)
		if !s.inline.CompareAndSwap(seq, 0) {
			return // the watchdog gave the reading to another goroutine
		}
	}
}

// hangupPoll is how often a reader that waits for a place among the running
// looks for the peer's hang-up.
const hangupPoll = 5 * time.Millisecond

// takeSlot waits for a place among the running and reports whether it got
// one. While every place is taken nobody reads the socket, so a process that
// went away would go unnoticed, its calls running on: it looks for the
// hang-up itself, and reports false when the peer is gone.
func (s *connServer) takeSlot() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTicker(hangupPoll)
	defer t.Stop()
	for {
		select {
		case s.slots <- struct{}{}:
			return true
		case <-t.C:
			if s.hungUp() {
				return false
			}
		}
	}
}

// hungUp reports whether the peer closed its end (POLLRDHUP), without reading.
func (s *connServer) hungUp() bool {
	raw, err := s.c.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			hup = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return hup
}

// end ends reading, and cancels the connection's calls still running: the
// process's calls end with it.
func (s *connServer) end() {
	close(s.done)
	s.callsMu.Lock()
	s.gone = true
	calls := make([]*call, 0, len(s.calls))
	for _, c := range s.calls {
		calls = append(calls, c)
	}
	s.cancelled = len(calls)
	s.callsMu.Unlock()
	for _, c := range calls {
		c.hook.fire(cancel.Disconnect)
	}
}

// call is a request in flight, which its process may cancel (OpCancel, or
// by going away).
type call struct {
	req  wire.Request
	hook callHook
}

// startCall registers req before it runs, so that a cancel read after it
// finds it.
func (s *connServer) startCall(req wire.Request) *call {
	c := &call{req: req}
	s.callsMu.Lock()
	s.calls[req.ID] = c
	gone := s.gone
	s.callsMu.Unlock()
	if gone {
		c.hook.fire(cancel.Disconnect)
	}
	return c
}

// cancelCall cancels the call with request id, if it is still in flight.
func (s *connServer) cancelCall(id uint64) {
	s.callsMu.Lock()
	c := s.calls[id]
	s.callsMu.Unlock()
	if c != nil {
		c.hook.fire(cancel.Context)
	}
}

// run runs c, answers it and gives back its place among the running.
func (s *connServer) run(c *call) {
	req := c.req
	r0, err := s.rt.invokeHooked(context.Background(), req.Name, req.Arg, 0, &c.hook)
	s.callsMu.Lock()
	delete(s.calls, req.ID)
	s.callsMu.Unlock()
	s.write(req.ID, r0, err)
	s.running.Add(-1)
	<-s.slots
}

// watch is the watchdog (see connServer). It starts asleep.
func (s *connServer) watch() {
	defer s.wg.Done()
	t := time.NewTicker(takeover)
	defer t.Stop()
	for {
		// Asleep: the reader clears s.asleep and sends on wake when a request
		// next runs inline.
		t.Stop()
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		t.Reset(takeover)
		if !s.patrol(t) {
			return
		}
	}
}

// patrol ticks until the connection has been idle for idleTicks ticks, and
// then returns true with s.asleep set; or false when reading has ended. A
// request seen running inline at two ticks in a row loses the reader role.
func (s *connServer) patrol(t *time.Ticker) bool {
	var last uint64 // the inline request at the last tick
	lastSeq, idle := s.seq.Load(), 0
	for {
		select {
		case <-t.C:
		case <-s.done:
			return false
		}
		v, seq := s.inline.Load(), s.seq.Load()
		switch {
		case v != 0 && v == last && s.inline.CompareAndSwap(v, 0):
			s.wg.Add(1)
			go s.read()
		case v != 0 || seq != lastSeq:
			idle = 0
		case idle < idleTicks:
			idle++
		default:
			s.asleep.Store(true)
			// The reader stores s.inline before it looks at s.asleep: if a
			// request runs now, one of the two clears s.asleep, and only the
			// reader then sends on wake.
			if s.inline.Load() == 0 || !s.asleep.CompareAndSwap(true, false) {
				return true
			}
			idle = 0
		}
		last, lastSeq = v, seq
	}
}

// write answers request id. A failed write is not reported: it means the
// process is gone, which the connection's reader sees too.
func (s *connServer) write(id, r0 uint64, err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = wire.AppendResult(s.wbuf[:0], id, r0, invokeFailure(err))
	s.c.Write(s.wbuf)
}

// invokeFailure is err (nil: none) as a result reports it: its text, and
// the code a client tests (userspace.ErrNoSuchProgram, ErrRejected,
// ErrCancelled, ErrFailed).
func invokeFailure(err error) error {
	if err == nil {
		return nil
	}
	code := wire.CodeFailed
	switch {
	case errors.Is(err, ErrNoProgram):
		code = wire.CodeNoProgram
	case errors.Is(err, abi.ErrCancelled):
		code = wire.CodeCancelled
	case errors.Is(err, wire.ErrMalformed):
		code = wire.CodeRejected
	case errors.Is(err, wire.ErrNoGlobal):
		code = wire.CodeNoGlobal
	}
	return &wire.InvokeError{Code: code, Message: err.Error()}
}

// writeStatus answers request id with the runtime's status.
func (s *connServer) writeStatus(id uint64) {
	b, err := wire.EncodeStatus(s.rt.Status())
	if err != nil {
		s.write(id, 0, err)
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = wire.AppendData(s.wbuf[:0], id, 0, b)
	s.c.Write(s.wbuf)
}

func (rt *Runtime) tracef(format string, args ...any) {
	rt.traceMu.Lock()
	defer rt.traceMu.Unlock()
	fmt.Fprintf(rt.trace, format, args...)
}
