package serve

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire protocol between the runtime and attached processes, over a
// SOCK_SEQPACKET unix socket (one message per datagram-like packet):
//
//	runtime → process, on connect:  hello  = magic[8] version u32 heapSize u64
//	                                kind u32, with the descriptor to map the heap
//	                                from (SCM_RIGHTS): a heap file or memfd (kind
//	                                HeapFile), or a BPF arena map (kind HeapArena)
//	process → runtime:              invoke = op u32 (1) arg u64 name...
//	runtime → process:              result = status u32 r0 u64 message...
//
// status 0 is success; otherwise message says what failed.
const (
	Magic        = "KFLEXRT\x00"
	Version      = 2
	helloSize    = 8 + 4 + 8 + 4
	opInvoke     = 1
	maxNameLen   = 64
	maxMessage   = 4096
	statusOK     = 0
	statusFailed = 1
)

// ErrVersion is returned by a client that reaches a runtime of another version.
var ErrVersion = errors.New("kflex runtime speaks another protocol version")

// HeapKind says what the descriptor in the runtime's greeting is.
type HeapKind uint32

const (
	HeapFile  HeapKind = 0 // a heap file or memfd: map it (heap.OpenFD)
	HeapArena HeapKind = 1 // a BPF arena map: map it at its address (kernel.OpenArena)
)

func encodeHello(heapSize uint64, kind HeapKind) []byte {
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

// EncodeInvoke is the request to run program name with argument arg.
func EncodeInvoke(name string, arg uint64) ([]byte, error) {
	if len(name) == 0 || len(name) > maxNameLen {
		return nil, fmt.Errorf("program name %q: want 1 to %d bytes", name, maxNameLen)
	}
	b := make([]byte, 12, 12+len(name))
	binary.LittleEndian.PutUint32(b, opInvoke)
	binary.LittleEndian.PutUint64(b[4:], arg)
	return append(b, name...), nil
}

func decodeInvoke(b []byte) (name string, arg uint64, err error) {
	if len(b) < 13 || len(b) > 12+maxNameLen || binary.LittleEndian.Uint32(b) != opInvoke {
		return "", 0, fmt.Errorf("malformed request (%d bytes)", len(b))
	}
	return string(b[12:]), binary.LittleEndian.Uint64(b[4:]), nil
}

func encodeResult(r0 uint64, err error) []byte {
	b := make([]byte, 12)
	if err != nil {
		binary.LittleEndian.PutUint32(b, statusFailed)
		msg := err.Error()
		if len(msg) > maxMessage {
			msg = msg[:maxMessage]
		}
		return append(b, msg...)
	}
	binary.LittleEndian.PutUint64(b[4:], r0)
	return b
}

// InvokeError is an extension's failure as the runtime reported it.
type InvokeError struct{ Message string }

func (e *InvokeError) Error() string { return "extension failed: " + e.Message }

// DecodeResult reads the runtime's answer to an invoke.
func DecodeResult(b []byte) (uint64, error) {
	if len(b) < 12 {
		return 0, fmt.Errorf("malformed result (%d bytes)", len(b))
	}
	if binary.LittleEndian.Uint32(b) != statusOK {
		return 0, &InvokeError{Message: string(b[12:])}
	}
	return binary.LittleEndian.Uint64(b[4:]), nil
}
