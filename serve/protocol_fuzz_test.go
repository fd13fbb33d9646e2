package serve_test

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/internal/sys/wire"
	"github.com/kflex-go/kflex/userspace"
)

// FuzzProtocol sends a live runtime whatever packets the input makes (each
// input byte run: a length, then that many bytes) on a connection of its
// own: every packet gets an answer that decodes, or the runtime closes the
// connection; nothing hangs or crashes it; and a well-formed client is
// served afterwards.
func FuzzProtocol(f *testing.F) {
	fx := start(f)
	inv, _ := wire.EncodeInvoke(7, "add1", 41)
	f.Add(append([]byte{byte(len(inv))}, inv...))
	f.Add([]byte{3, 1, 0, 0})
	bad := append([]byte(nil), inv...)
	binary.LittleEndian.PutUint32(bad, 9)
	f.Add(append(append([]byte{byte(len(bad))}, bad...), append([]byte{byte(len(inv))}, inv...)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := rawConn(t, fx.socket)
		deadline := time.Now().Add(5 * time.Second)
		require.NoError(t, c.SetDeadline(deadline))
		buf := make([]byte, wire.MaxPacket+1)
		for len(data) > 0 {
			n := min(int(data[0]), len(data)-1)
			packet := data[1 : 1+n]
			data = data[1+n:]
			if _, err := c.Write(packet); err != nil {
				break // closed by the runtime after an earlier packet
			}
			got, err := c.Read(buf)
			if err != nil || got == 0 {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("no answer to %x within 5s", packet)
				}
				break // closed
			}
			if _, err := wire.DecodeResult(buf[:got]); err != nil {
				t.Fatalf("answer %x to %x: %v", buf[:got], packet, err)
			}
		}
		cl, err := userspace.Dial(fx.socket, nil)
		require.NoError(t, err)
		defer cl.Close()
		r0, err := cl.Invoke("add1", 1)
		require.NoError(t, err)
		require.Equal(t, uint64(2), r0)
	})
}
