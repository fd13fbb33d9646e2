package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// pingPong passes the turn word beside the lock (lock+8) back to Go until it
// has done so lock+16 times; the lock word's counterpart in Go does the same
// in the other direction.
var pingPong = `
	mov %r9, %r1
	mov %r6, 0
loop:
	ldxdw %r1, [%r9+0]` + serve.LockCall + `
	ldxdw %r1, [%r9+0]
	ldxdw %r7, [%r1+8]
	jne %r7, 1, skip
	stdw [%r1+8], 0
	add %r6, 1
skip:
	ldxdw %r1, [%r9+0]
` + serve.UnlockCall + `
	ldxdw %r1, [%r9+0]
	ldxdw %r7, [%r1+16]
	jlt %r6, %r7, loop
	mov %r0, %r6
	exit
` + mcs.BytecodeLock

// lockLoop takes and releases the lock lock+16 times, uncontended.
var lockLoop = `
	mov %r9, %r1
	ldxdw %r1, [%r9+0]
	ldxdw %r6, [%r1+16]
loop:
	ldxdw %r1, [%r9+0]` + serve.LockCall + `
	ldxdw %r1, [%r9+0]
` + serve.UnlockCall + `
	sub %r6, 1
	jne %r6, 0, loop
	mov %r0, 0
	exit
` + mcs.BytecodeLock

// MeasureLock measures, on a fresh anonymous heap: the handoff latency of one
// lock between a goroutine (Go lock) and an extension (bytecode lock, JIT),
// the extension's uncontended lock+unlock, and the round trip of invoking an
// empty extension from a client attached over the socket (userspace.Dial),
// the runtime's metrics on. Figures: handoff_ns, extension_lock_unlock_ns, invoke_us.
func MeasureLock(rounds int) (map[string]float64, error) {
	h, err := heap.CreateMemfd("kflex-bench", &heap.Options{Params: heap.Params{Size: 16 << 20}})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	progs := map[string]asm.Instructions{}
	for name, src := range map[string]string{"pingpong": pingPong, "lockloop": lockLoop, "empty": "mov %r0, 0\nexit"} {
		if progs[name], err = bytecode.Assemble(src); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	// The extensions below run for all the rounds: no time budget. The
	// runtime has its metrics on, as kflex serve --metrics does: invoke_us
	// includes what they cost.
	rt, err := serve.NewWith(h, progs, serve.Options{JIT: 1, Budget: -1, Metrics: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	off, err := h.Alloc(24)
	if err != nil {
		return nil, err
	}
	*h.Uint64(off), *h.Uint64(off + 8), *h.Uint64(off + 16) = 0, 0, uint64(rounds)
	lock := h.Base() + off
	m, err := rt.Process().Mutex(off)
	if err != nil {
		return nil, err
	}
	figures := map[string]float64{}

	// Ping-pong: every handoff crosses between Go and the extension.
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := rt.Invoke(context.Background(), "pingpong", lock); done <- err }()
	for n := 0; n < rounds; {
		select {
		case err := <-done: // the extension stopped early: it failed
			return nil, fmt.Errorf("pingpong stopped after %d rounds: %v", n, err)
		default:
		}
		if err := m.Lock(); err != nil {
			return nil, fmt.Errorf("pingpong: %w", err)
		}
		if *h.Uint64(off + 8) == 0 {
			*h.Uint64(off + 8) = 1
			n++
		}
		m.Unlock()
	}
	if err := <-done; err != nil {
		return nil, fmt.Errorf("pingpong: %w", err)
	}
	figures["handoff_ns"] = float64(time.Since(start).Nanoseconds()) / float64(2*rounds)

	start = time.Now()
	if _, err := rt.Invoke(context.Background(), "lockloop", lock); err != nil {
		return nil, fmt.Errorf("lockloop: %w", err)
	}
	figures["extension_lock_unlock_ns"] = float64(time.Since(start).Nanoseconds()) / float64(rounds)

	// A client in this process, over the socket.
	dir, err := os.MkdirTemp("", "kflex-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ln) }()
	c, err := userspace.Dial(sock, nil)
	if err != nil {
		ln.Close()
		return nil, err
	}
	n := max(rounds/10, 100)
	start = time.Now()
	for range n {
		if _, err := c.Invoke("empty", 0); err != nil {
			break
		}
	}
	figures["invoke_us"] = float64(time.Since(start).Microseconds()) / float64(n)
	c.Close()
	ln.Close()
	<-served
	return figures, nil
}
