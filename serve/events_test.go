package serve_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/serve"
)

// tick adds 1 to the word its argument points at and returns the new value.
const tick = `
	mov %r2, 1
	lock fetch add [%r3+0], %r2
	mov %r0, %r2
	add %r0, 1
	exit`

// sumBytes returns the sum of the bytes of the datagram at its argument.
const sumBytes = `
	ldxdw %r7, [%r1+40]
	mov %r6, %r3
	mov %r0, 0
	mov %r8, 0
loop:
	jge %r8, %r7, done
	mov %r4, %r6
	add %r4, %r8
	ldxb %r5, [%r4+0]
	add %r0, %r5
	add %r8, 1
	ja loop
done:
	exit`

func eventRuntime(t testing.TB, f *fixture) *serve.Runtime {
	progs := map[string]asm.Instructions{}
	for name, src := range map[string]string{"tick": tick, "sum": sumBytes} {
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err, name)
		progs[name] = insns
	}
	rt, err := serve.New(f.h, progs, 2, io.Discard)
	require.NoError(t, err)
	return rt
}

func TestTimer(t *testing.T) {
	f := start(t)
	rt := eventRuntime(t, f)
	defer rt.Close()
	*f.h.Uint64(f.lock + 8) = 0
	tm, err := rt.Every("tick", time.Millisecond, f.h.Base()+f.lock+8)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return tm.Runs() >= 5 }, 10*time.Second, time.Millisecond)
	tm.Stop()
	runs := tm.Runs()
	assert.Equal(t, runs, *f.h.Uint64(f.lock + 8), "one increment per run")
	time.Sleep(5 * time.Millisecond)
	assert.Equal(t, runs, *f.h.Uint64(f.lock + 8), "no run after Stop")
	assert.NoError(t, tm.Err())

	_, err = rt.Every("nope", time.Millisecond, 0)
	assert.EqualError(t, err, `serve: timer: no program "nope"`)
	_, err = rt.Every("tick", 0, 0)
	assert.EqualError(t, err, "serve: timer for tick: interval 0s is not positive")

	// A timer left running stops with the runtime.
	_, err = rt.Every("tick", time.Millisecond, f.h.Base()+f.lock+8)
	require.NoError(t, err)
}

func TestUDP(t *testing.T) {
	f := start(t)
	rt := eventRuntime(t, f)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- rt.ServeUDP(conn, "sum") }()
	c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	reply := make([]byte, 1024)
	live := f.h.Stats().LiveObjects
	for _, size := range []int{0, 1, 100, 1400} {
		msg := make([]byte, size)
		want := uint64(0)
		for i := range msg {
			msg[i] = byte(i * 7)
			want += uint64(msg[i])
		}
		_, err := c.Write(msg)
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, err := c.Read(reply)
		require.NoError(t, err)
		require.Equal(t, 9, n, "%q", reply[:n])
		assert.Equal(t, byte(0), reply[0])
		assert.Equal(t, want, binary.LittleEndian.Uint64(reply[1:]), "datagram of %d bytes", size)
	}
	assert.Equal(t, live, f.h.Stats().LiveObjects, "datagram copies are freed")
	require.NoError(t, rt.Close())
	require.NoError(t, <-done, "ServeUDP returns when the runtime closes")
	assert.ErrorContains(t, rt.ServeUDP(conn, "sum"), "runtime closed")
}

// TestUDPError: a run that fails replies with the error's text.
func TestUDPError(t *testing.T) {
	f := start(t)
	insns, err := bytecode.Assemble("lddw %r1, 16\nldxdw %r0, [%r1+0]\nexit")
	require.NoError(t, err)
	rt, err := serve.NewWith(f.h, map[string]asm.Instructions{"bad": insns}, serve.Options{Interpreted: 1})
	require.NoError(t, err)
	defer rt.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	go rt.ServeUDP(conn, "bad")
	assert.EqualError(t, rt.ServeUDP(conn, "nope"), `serve: udp: no program "nope"`)
	c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	reply := make([]byte, 1024)
	n, err := c.Read(reply)
	require.NoError(t, err)
	require.Greater(t, n, 1)
	assert.Equal(t, byte(1), reply[0])
	assert.Contains(t, string(reply[1:n]), "read of 8 bytes at 0x10")
}

// BenchmarkUDP is a round trip of a 64-byte datagram through an extension
// that sums its bytes, beside BenchmarkInvoke's round trip over the socket.
func BenchmarkUDP(b *testing.B) {
	f := start(b)
	rt := eventRuntime(b, f)
	defer rt.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(b, err)
	go rt.ServeUDP(conn, "sum")
	c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	require.NoError(b, err)
	defer c.Close()
	msg, reply := make([]byte, 64), make([]byte, 16)
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if n, err := c.Read(reply); err != nil || n != 9 || reply[0] != 0 {
			b.Fatalf("reply %q, %v", reply[:n], err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/datagram")
}
