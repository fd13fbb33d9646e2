package serve

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire protocol between the runtime and attached processes, over a
// SOCK_SEQPACKET unix socket (one message per datagram-like packet):
//
//	runtime → process, on connect:  hello  = magic[8] version u32 heapSize u64,
//	                                with the heap's file descriptor (SCM_RIGHTS)
//	process → runtime:              invoke = op u32 (1) arg u64 name...
//	runtime → process:              result = status u32 r0 u64 message...
//
// status 0 is success; otherwise message says what failed.
const (
	Magic        = "KFLEXRT\x00"
	Version      = 1
	helloSize    = 8 + 4 + 8
	opInvoke     = 1
	maxNameLen   = 64
	maxMessage   = 4096
	statusOK     = 0
	statusFailed = 1
)

// ErrVersion is returned by a client that reaches a runtime of another version.
var ErrVersion = errors.New("kflex runtime speaks another protocol version")

func encodeHello(heapSize uint64) []byte {
	b := append([]byte(Magic), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[8:], Version)
	binary.LittleEndian.PutUint64(b[12:], heapSize)
	return b
}

// DecodeHello checks a runtime's greeting and returns the heap size it announces.
func DecodeHello(b []byte) (uint64, error) {
	if len(b) != helloSize || string(b[:8]) != Magic {
		return 0, fmt.Errorf("%w: not a kflex runtime greeting (%d bytes)", ErrVersion, len(b))
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != Version {
		return 0, fmt.Errorf("%w: runtime has version %d, this build %d", ErrVersion, v, Version)
	}
	return binary.LittleEndian.Uint64(b[12:]), nil
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
