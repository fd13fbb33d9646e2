package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	Magic     = "KFLEXRT\x00"
	Version   = 2
	helloSize = 8 + 4 + 8 + 4
)

// ErrVersion is returned by a client that reaches a runtime of another version.
var ErrVersion = errors.New("kflex runtime speaks another protocol version")

// HeapKind says what the descriptor in the runtime's greeting is.
type HeapKind uint32

const (
	HeapFile  HeapKind = 0 // a heap file or memfd: map it (heap.OpenFD)
	HeapArena HeapKind = 1 // a BPF arena map: map it at its address (kernel.OpenArena)
)

// EncodeHello is the runtime's greeting, announcing a heap of heapSize bytes
// behind a descriptor of the given kind (sent beside it).
func EncodeHello(heapSize uint64, kind HeapKind) []byte {
	b := make([]byte, helloSize)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], Version)
	binary.LittleEndian.PutUint64(b[12:], heapSize)
	binary.LittleEndian.PutUint32(b[20:], uint32(kind))
	return b
}

// DecodeHello checks a runtime's greeting and returns the heap size it
// announces and what kind of descriptor came with it.
func DecodeHello(b []byte) (uint64, HeapKind, error) {
	if len(b) < 12 || string(b[:8]) != Magic {
		return 0, 0, fmt.Errorf("%w: not a kflex runtime greeting (%d bytes)", ErrVersion, len(b))
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != Version || len(b) != helloSize {
		return 0, 0, fmt.Errorf("%w: runtime has version %d, this build %d", ErrVersion, v, Version)
	}
	kind := HeapKind(binary.LittleEndian.Uint32(b[20:]))
	if kind != HeapFile && kind != HeapArena {
		return 0, 0, fmt.Errorf("%w: unknown heap kind %d", ErrVersion, kind)
	}
	return binary.LittleEndian.Uint64(b[12:]), kind, nil
}

// ReceivedFD is the one descriptor in a greeting's control message.
func ReceivedFD(oob []byte) (int, error) {
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
