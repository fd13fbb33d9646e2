package userspace

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/arena"
	"github.com/kflex-go/kflex/serve"
)

// ErrNoRuntime: nothing listens at the socket. ErrRuntimeGone: the runtime
// closed the connection (it exited or died). Other versions give
// serve.ErrVersion.
var (
	ErrNoRuntime   = errors.New("no kflex runtime")
	ErrRuntimeGone = errors.New("kflex runtime went away")
)

// Client is a process attached to a running extension runtime (kflex serve):
// it shares the runtime's heap and invokes its extensions.
type Client struct {
	*Heap
	conn *net.UnixConn
	path string
}

// Dial attaches to the runtime listening at socket: it receives the heap's
// file descriptor, maps the heap and joins its owner table.
func Dial(socket string, opts *Options) (*Client, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w at %s: %v", ErrNoRuntime, socket, err)
		}
		return nil, fmt.Errorf("dial kflex runtime %s: %w", socket, err)
	}
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w at %s: no greeting: %v", ErrRuntimeGone, socket, err)
	}
	fd, fdErr := receivedFD(oob[:oobn])
	if fdErr == nil {
		defer unix.Close(fd)
	}
	_, kind, err := serve.DecodeHello(buf[:n])
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("kflex runtime at %s: %w", socket, err)
	}
	if fdErr != nil {
		conn.Close()
		return nil, fmt.Errorf("kflex runtime at %s: %w", socket, fdErr)
	}
	var h *Heap
	if kind == serve.HeapArena {
		h, err = attachArena(fd)
	} else {
		h, err = AttachFD(fd, opts)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("kflex runtime at %s: %w", socket, err)
	}
	return &Client{Heap: h, conn: conn, path: socket}, nil
}

// attachArena maps the BPF arena behind fd at its address (every process
// shares that view, so MapAt does not apply) and attaches to the heap in it.
func attachArena(fd int) (*Heap, error) {
	a, err := arena.Open(fd, heap.GuardSize)
	if err != nil {
		return nil, err
	}
	raw, err := heap.OpenIn(a.Base, uint64(a.Size), fmt.Sprintf("arena %d", fd))
	if err != nil {
		a.Close()
		return nil, err
	}
	h, err := attach(raw)
	if err != nil {
		a.Close()
		return nil, err
	}
	h.release = a.Close
	return h, nil
}

func receivedFD(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("greeting carried no heap file descriptor")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("greeting carried no heap file descriptor")
	}
	return fds[0], nil
}

// Invoke runs extension name in the runtime with argument arg and returns its
// r0. An extension's failure is a *serve.InvokeError.
func (c *Client) Invoke(name string, arg uint64) (uint64, error) {
	req, err := serve.EncodeInvoke(name, arg)
	if err != nil {
		return 0, err
	}
	if _, err := c.conn.Write(req); err != nil {
		return 0, fmt.Errorf("%w (%s): %v", ErrRuntimeGone, c.path, err)
	}
	buf := make([]byte, 4096+12)
	n, err := c.conn.Read(buf)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w (%s) during %s: %v", ErrRuntimeGone, c.path, name, err)
	}
	return serve.DecodeResult(buf[:n])
}

// Close detaches from the heap and the runtime.
func (c *Client) Close() error {
	err := c.conn.Close()
	if herr := c.Heap.Close(); err == nil {
		err = herr
	}
	return err
}
