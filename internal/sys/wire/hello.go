package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	Magic     = "KFLEXRT\x00"
	Version   = 3 // 3: requests and results carry an id
	helloSize = 8 + 4 + 8 + 4
)

// ErrVersion is returned by a client that reaches a runtime of another
// version, or something that is not a kflex runtime.
var ErrVersion = errors.New("kflex runtime speaks another protocol version")

// HeapKind says what the descriptor in the runtime's greeting is.
type HeapKind uint32

const (
	HeapFile  HeapKind = 0 // a heap file or memfd: map it (heap.OpenFD)
	HeapArena HeapKind = 1 // a BPF arena map: map it at its address (kernel.OpenArena)
)

// Hello is what the runtime's greeting announces.
type Hello struct {
	HeapSize uint64
	Kind     HeapKind
}

// EncodeHello is the runtime's greeting: the packet and its control message,
// which passes fd.
func EncodeHello(h Hello, fd int) (b, oob []byte) {
	b = make([]byte, helloSize)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], Version)
	binary.LittleEndian.PutUint64(b[12:], h.HeapSize)
	binary.LittleEndian.PutUint32(b[20:], uint32(h.Kind))
	return b, unix.UnixRights(fd)
}

// HelloBuffers are buffers to read a greeting into: a packet one byte longer
// than a greeting (so that a longer one is seen as such) and room for one
// descriptor.
func HelloBuffers() (b, oob []byte) {
	return make([]byte, helloSize+1), make([]byte, unix.CmsgSpace(4))
}

// DecodeHello checks a runtime's greeting (packet b, control message oob)
// and returns what it announces and the descriptor that came with it, which
// the caller then owns. On error, every descriptor received is closed.
func DecodeHello(b, oob []byte) (Hello, int, error) {
	fds := receivedFDs(oob)
	h, err := decodeHello(b)
	if err == nil && len(fds) != 1 {
		err = fmt.Errorf("%w: greeting carried %d descriptors, want 1 (the heap's)", ErrMalformed, len(fds))
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return Hello{}, -1, err
	}
	return h, fds[0], nil
}

func decodeHello(b []byte) (Hello, error) {
	if len(b) < 12 || string(b[:8]) != Magic {
		return Hello{}, fmt.Errorf("%w: not a kflex runtime greeting (%d bytes)", ErrVersion, len(b))
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != Version || len(b) != helloSize {
		return Hello{}, fmt.Errorf("%w: runtime has version %d, this build %d", ErrVersion, v, Version)
	}
	h := Hello{HeapSize: binary.LittleEndian.Uint64(b[12:]), Kind: HeapKind(binary.LittleEndian.Uint32(b[20:]))}
	if h.Kind != HeapFile && h.Kind != HeapArena {
		return Hello{}, fmt.Errorf("%w: unknown heap kind %d", ErrVersion, h.Kind)
	}
	return h, nil
}

// receivedFDs are the descriptors passed in control message oob.
func receivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if more, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, more...)
		}
	}
	return fds
}
