package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Op is what a request asks for.
type Op uint32

// The requests a process may make.
const (
	// OpInvoke runs extension Name with argument Arg; the result is r0.
	OpInvoke Op = 1
	// OpCancel cancels the process's own request Arg, still in flight: it
	// ends as if its caller's context had ended. It gets no result of its
	// own (the cancelled request's result says what happened).
	OpCancel Op = 2
	// OpCancelProgram cancels every running invocation of extension Name,
	// whoever made it (an operator's request: kflex cancel); the result's r0
	// is how many it cancelled.
	OpCancelProgram Op = 3
	// OpGlobal finds the global variable Name of the runtime's extensions
	// (a C global, which lives in the heap); Arg is how many bytes the
	// process will access there, and a smaller global is a failure. The
	// result's r0 is its address in the runtime's view.
	OpGlobal Op = 4
)

const (
	MaxNameLen   = 64
	MaxMessage   = 4096 // longer failure messages are cut
	headerSize   = 4 + 8 + 8
	statusOK     = 0
	statusFailed = 1
	// MaxRequest and MaxResult are the largest packets of each kind: read
	// into a buffer one byte longer, so that a longer packet is malformed
	// rather than silently cut short.
	MaxRequest = headerSize + MaxNameLen
	MaxResult  = headerSize + MaxMessage
)

// ErrMalformed is a message that does not follow the protocol: too short or
// too long, an unknown op or status, or (to a client) a result for a request
// it did not make.
var ErrMalformed = errors.New("malformed kflex message")

// Request is a process's request to the runtime.
type Request struct {
	ID   uint64 // the process's name for it, echoed in the result; not 0
	Op   Op
	Arg  uint64
	Name string // the extension
}

// EncodeInvoke is request id: run extension name with argument arg.
func EncodeInvoke(id uint64, name string, arg uint64) ([]byte, error) {
	return AppendInvoke(make([]byte, 0, headerSize+len(name)), id, name, arg)
}

// AppendInvoke is EncodeInvoke appending to b: a caller with a buffer of
// MaxRequest bytes encodes without allocating.
func AppendInvoke(b []byte, id uint64, name string, arg uint64) ([]byte, error) {
	return AppendRequest(b, Request{ID: id, Op: OpInvoke, Name: name, Arg: arg})
}

// AppendRequest appends request r to b.
func AppendRequest(b []byte, r Request) ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(r.Op))
	b = binary.LittleEndian.AppendUint64(b, r.ID)
	b = binary.LittleEndian.AppendUint64(b, r.Arg)
	return append(b, r.Name...), nil
}

// check says what is wrong with r, if anything.
func (r Request) check() error {
	switch {
	case r.ID == 0:
		return fmt.Errorf("request id 0 is reserved")
	case r.Op == OpCancel:
		if r.Name != "" || r.Arg == 0 {
			return fmt.Errorf("cancel of request %d: want a request id and no name", r.Arg)
		}
	case r.Op != OpInvoke && r.Op != OpCancelProgram && r.Op != OpGlobal:
		return fmt.Errorf("unknown op %d in request %d", r.Op, r.ID)
	case len(r.Name) == 0 || len(r.Name) > MaxNameLen:
		return fmt.Errorf("request %d names a program of %d bytes, want 1 to %d", r.ID, len(r.Name), MaxNameLen)
	}
	return nil
}

// DecodeRequest reads a request. On error (wrapping ErrMalformed), the
// returned request's ID is the one to answer the error with: 0 when the
// packet is too short to carry one.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) < headerSize {
		return Request{}, fmt.Errorf("%w: request of %d bytes, want at least %d", ErrMalformed, len(b), headerSize)
	}
	r := Request{Op: Op(binary.LittleEndian.Uint32(b)), ID: binary.LittleEndian.Uint64(b[4:]),
		Arg: binary.LittleEndian.Uint64(b[12:]), Name: string(b[headerSize:])}
	if r.ID == 0 {
		return Request{}, fmt.Errorf("%w: request id 0 is reserved", ErrMalformed)
	}
	if err := r.check(); err != nil {
		return Request{ID: r.ID}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return r, nil
}

// EncodeResult answers request id: r0, or, if err is not nil, its text.
func EncodeResult(id, r0 uint64, err error) []byte {
	return AppendResult(nil, id, r0, err)
}

// AppendResult is EncodeResult appending to b: a caller reusing a buffer
// encodes without allocating.
func AppendResult(b []byte, id, r0 uint64, err error) []byte {
	if err == nil {
		b = binary.LittleEndian.AppendUint32(b, statusOK)
		b = binary.LittleEndian.AppendUint64(b, id)
		return binary.LittleEndian.AppendUint64(b, r0)
	}
	msg := err.Error()
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	b = binary.LittleEndian.AppendUint32(b, statusFailed)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = binary.LittleEndian.AppendUint64(b, 0)
	return append(b, msg...)
}

// InvokeError is an extension's failure as the runtime reported it: it ran
// and failed, there is no such extension, or the request was malformed.
type InvokeError struct{ Message string }

func (e *InvokeError) Error() string { return "extension failed: " + e.Message }

// Result is the runtime's answer to request ID: R0, or the failure Err (an
// *InvokeError).
type Result struct {
	ID  uint64
	R0  uint64
	Err error
}

// DecodeResult reads the runtime's answer to a request. An error (wrapping
// ErrMalformed) means b is not a result; a failure the runtime reported is
// the result's Err.
func DecodeResult(b []byte) (Result, error) {
	if len(b) < headerSize || len(b) > MaxResult {
		return Result{}, fmt.Errorf("%w: result of %d bytes, want %d to %d", ErrMalformed, len(b), headerSize, MaxResult)
	}
	r := Result{ID: binary.LittleEndian.Uint64(b[4:])}
	switch status := binary.LittleEndian.Uint32(b); status {
	case statusOK:
		if len(b) != headerSize {
			return Result{}, fmt.Errorf("%w: success result %d with %d bytes of message", ErrMalformed, r.ID, len(b)-headerSize)
		}
		r.R0 = binary.LittleEndian.Uint64(b[12:])
	case statusFailed:
		r.Err = &InvokeError{Message: string(b[headerSize:])}
	default:
		return Result{}, fmt.Errorf("%w: result %d has unknown status %d", ErrMalformed, r.ID, status)
	}
	return r, nil
}
