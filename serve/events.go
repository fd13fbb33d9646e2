package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The runtime's own events: a timer and a UDP socket run extensions without a
// process asking.

// Timer runs one extension periodically; see Runtime.Every.
type Timer struct {
	runs atomic.Uint64
	ctx  context.Context // ends on Stop: a run in progress is cancelled
	end  context.CancelFunc
	stop chan struct{}
	done chan struct{}
	once sync.Once
	err  error // the run that stopped it; read after done
}

// Every runs program name with arg every interval, on the runtime's
// executors, until Stop, the runtime's Close, or a run that fails (its error
// is then Err's). A run that takes longer than interval delays the next one;
// runs never overlap.
func (rt *Runtime) Every(name string, interval time.Duration, arg uint64) (*Timer, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("serve: timer for %s: interval %v is not positive", name, interval)
	}
	if !rt.has(name) {
		return nil, fmt.Errorf("serve: timer: %w", noProgram(name))
	}
	t := &Timer{stop: make(chan struct{}), done: make(chan struct{})}
	t.ctx, t.end = context.WithCancel(context.Background())
	if !rt.track(t.Stop) {
		return nil, errClosed
	}
	go func() {
		defer rt.wg.Done()
		defer close(t.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
			}
			if _, err := rt.Invoke(t.ctx, name, arg); err != nil {
				if t.ctx.Err() != nil {
					return // stopped, not failed
				}
				t.err = fmt.Errorf("serve: timer for %s: %w", name, err)
				return
			}
			t.runs.Add(1)
		}
	}()
	return t, nil
}

// Runs counts the runs that completed.
func (t *Timer) Runs() uint64 { return t.runs.Load() }

// Stop stops the timer and waits for a run in progress to end.
func (t *Timer) Stop() {
	t.once.Do(func() {
		t.end()
		close(t.stop)
	})
	<-t.done
}

// Err is the failure that stopped the timer, once it has stopped.
func (t *Timer) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// MaxDatagram is the largest datagram ServeUDP passes to an extension.
const MaxDatagram = 64 << 10

// ServeUDP runs program name on every datagram conn receives, until conn or
// the runtime is closed. The datagram is copied into the heap for the run:
// the argument (CtxArg, and r3) is its address and CtxDataLen its length. The
// sender gets a reply: a zero byte and r0 (8 bytes, little-endian), or a one
// byte and the error's text.
func (rt *Runtime) ServeUDP(conn *net.UDPConn, name string) error {
	if !rt.has(name) {
		return fmt.Errorf("serve: udp: %w", noProgram(name))
	}
	if !rt.track(func() { conn.Close() }) {
		return errClosed
	}
	defer rt.wg.Done()
	buf := make([]byte, MaxDatagram)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("serve: udp: %w", err)
		}
		var reply []byte
		if r0, err := rt.onDatagram(name, buf[:n]); err != nil {
			reply = append([]byte{1}, err.Error()...)
		} else {
			reply = binary.LittleEndian.AppendUint64([]byte{0}, r0)
		}
		if _, err := conn.WriteToUDP(reply, from); err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}

func (rt *Runtime) onDatagram(name string, data []byte) (uint64, error) {
	off, err := rt.h.AllocOwned(uint64(max(len(data), 1)))
	if err != nil {
		return 0, fmt.Errorf("datagram of %d bytes: %w", len(data), err)
	}
	defer rt.h.FreeOwned(off)
	copy(rt.h.Bytes(off, uint64(len(data))), data)
	return rt.InvokeData(context.Background(), name, rt.h.Base()+off, uint64(len(data)))
}

var errClosed = errors.New("serve: runtime closed")

func (rt *Runtime) has(name string) bool { return rt.progs[name] != nil || rt.iprogs[name] != nil }

// track registers an event source: Close calls stop, then waits for the
// source to call rt.wg.Done. It fails once the runtime is closing.
func (rt *Runtime) track(stop func()) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closing {
		return false
	}
	rt.stops = append(rt.stops, stop)
	rt.wg.Add(1)
	return true
}
