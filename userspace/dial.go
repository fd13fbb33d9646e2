package userspace

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/arena"
	"github.com/kflex-go/kflex/internal/sys/wire"
)

// ErrNoRuntime: nothing listens at the socket. ErrRuntimeGone: the runtime
// closed the connection (it exited or died). ErrVersion: the runtime speaks
// another protocol version, or is not a kflex runtime. ErrMalformed: the
// runtime sent a message that breaks the protocol; the Client stops using the
// connection.
var (
	ErrNoRuntime   = errors.New("no kflex runtime")
	ErrRuntimeGone = errors.New("kflex runtime went away")
	ErrVersion     = wire.ErrVersion
	ErrMalformed   = wire.ErrMalformed
)

// InvokeError is an invocation's failure as the runtime reported it; Invoke
// returns it as a *InvokeError. Its Code says what kind of failure it is,
// and errors.Is matches it against the code's sentinel: ErrNoSuchProgram,
// ErrRejected, ErrCancelled or ErrFailed.
type InvokeError = wire.InvokeError

// Code is an *InvokeError's kind.
type Code = wire.Code

// The kinds of failure an invocation reports, and their sentinels:
// ErrFailed, the extension ran and failed (a fault, a helper's error), or
// the runtime did not say; ErrNoSuchProgram, the runtime has no extension of
// that name; ErrRejected, the runtime refused the request itself (it breaks
// the protocol); ErrCancelled, the invocation was cancelled (its time budget
// ran out, its context ended, an operator cancelled it, or the runtime was
// closing) and what it held was released; ErrNoSuchGlobal (Client.Global),
// the runtime has no global variable of that name, or a smaller one.
const (
	CodeFailed    = wire.CodeFailed
	CodeNoProgram = wire.CodeNoProgram
	CodeRejected  = wire.CodeRejected
	CodeCancelled = wire.CodeCancelled
	CodeNoGlobal  = wire.CodeNoGlobal
)

var (
	ErrFailed        = wire.ErrFailed
	ErrNoSuchProgram = wire.ErrNoProgram
	ErrRejected      = wire.ErrRejected
	ErrCancelled     = wire.ErrCancelled
	ErrNoSuchGlobal  = wire.ErrNoGlobal
)

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
	buf, oob := wire.HelloBuffers()
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w at %s: no greeting: %v", ErrRuntimeGone, socket, err)
	}
	hello, fd, err := wire.DecodeHello(buf[:n], oob[:oobn])
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("kflex runtime at %s: %w", socket, err)
	}
	defer unix.Close(fd) // the heap keeps its own mapping
	var h *Heap
	if hello.Kind == wire.HeapArena {
		h, err = attachArena(fd)
	} else {
		h, err = AttachFD(fd, opts)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("kflex runtime at %s: %w", socket, err)
	}
	return newClient(h, conn, socket), nil
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
