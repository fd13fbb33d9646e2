package wire

import (
	"encoding/binary"
	"fmt"
)

const (
	opInvoke     = 1
	MaxNameLen   = 64
	MaxMessage   = 4096
	statusOK     = 0
	statusFailed = 1
	// MaxRequest and MaxResult are the largest packets of each kind.
	MaxRequest = 12 + MaxNameLen
	MaxResult  = 12 + MaxMessage
)

// EncodeInvoke is the request to run program name with argument arg.
func EncodeInvoke(name string, arg uint64) ([]byte, error) {
	if len(name) == 0 || len(name) > MaxNameLen {
		return nil, fmt.Errorf("program name %q: want 1 to %d bytes", name, MaxNameLen)
	}
	b := make([]byte, 12, 12+len(name))
	binary.LittleEndian.PutUint32(b, opInvoke)
	binary.LittleEndian.PutUint64(b[4:], arg)
	return append(b, name...), nil
}

// DecodeInvoke reads a request.
func DecodeInvoke(b []byte) (name string, arg uint64, err error) {
	if len(b) < 13 || len(b) > MaxRequest || binary.LittleEndian.Uint32(b) != opInvoke {
		return "", 0, fmt.Errorf("malformed request (%d bytes)", len(b))
	}
	return string(b[12:]), binary.LittleEndian.Uint64(b[4:]), nil
}

// EncodeResult is the answer to an invoke: r0, or err's text.
func EncodeResult(r0 uint64, err error) []byte {
	b := make([]byte, 12)
	if err != nil {
		binary.LittleEndian.PutUint32(b, statusFailed)
		msg := err.Error()
		if len(msg) > MaxMessage {
			msg = msg[:MaxMessage]
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
