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
	// is how many it cancelled; a name the runtime does not serve fails
	// with CodeNoProgram.
	OpCancelProgram Op = 3
	// OpStatus asks what the runtime runs (no name, Arg 0): the result
	// carries a Status (status.go). A runtime older than this op answers
	// it as any unknown op, with a failure naming it (IsUnknownOp).
	OpStatus Op = 4
	// OpGlobal finds the global variable Name of the runtime's extensions
	// (a C global, which lives in the heap); Arg is how many bytes the
	// process will access there, and a smaller global is a failure. The
	// result's r0 is its address in the runtime's view.
	OpGlobal Op = 5
)

const (
	MaxNameLen   = 64
	MaxMessage   = 4096 // longer failure messages are cut
	headerSize   = 4 + 8 + 8
	statusOK     = 0
	statusFailed = 1
	statusData   = 2 // success with a payload: the answer to OpStatus
	// MaxRequest and MaxResult are the largest packets of each kind: read
	// into a buffer one byte longer, so that a longer packet is malformed
	// rather than silently cut short. MaxPacket is the largest result of
	// any kind, a status included: a client that asks for the status reads
	// into a buffer of MaxPacket + 1.
	MaxRequest = headerSize + MaxNameLen
	MaxResult  = headerSize + MaxMessage
	MaxPacket  = headerSize + MaxData
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
	case r.Op == OpStatus:
		if r.Name != "" || r.Arg != 0 {
			return fmt.Errorf("status request %d: want no name and argument 0", r.ID)
		}
	case r.Op != OpInvoke && r.Op != OpCancelProgram && r.Op != OpGlobal:
		return fmt.Errorf("%s %d in request %d", unknownOp, r.Op, r.ID)
	case len(r.Name) == 0 || len(r.Name) > MaxNameLen:
		return fmt.Errorf("request %d: a name of %d bytes, want 1 to %d", r.ID, len(r.Name), MaxNameLen)
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

// EncodeResult answers request id: r0, or, if err is not nil, its text and
// code (AppendResult).
func EncodeResult(id, r0 uint64, err error) []byte {
	return AppendResult(nil, id, r0, err)
}

// AppendResult is EncodeResult appending to b: a caller reusing a buffer
// encodes without allocating. A failure's code is err's if err is an
// *InvokeError (whose Message is then the text), else CodeFailed.
func AppendResult(b []byte, id, r0 uint64, err error) []byte {
	if err == nil {
		b = binary.LittleEndian.AppendUint32(b, statusOK)
		b = binary.LittleEndian.AppendUint64(b, id)
		return binary.LittleEndian.AppendUint64(b, r0)
	}
	code, msg := CodeFailed, ""
	if ie, ok := err.(*InvokeError); ok {
		code, msg = ie.Code, ie.Message
	} else {
		msg = err.Error()
	}
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	b = binary.LittleEndian.AppendUint32(b, statusFailed)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = binary.LittleEndian.AppendUint64(b, uint64(code))
	return append(b, msg...)
}

// Code says what kind of failure a result reports. It travels in a failed
// result's r0 field, which runtimes of version 3 before codes left 0
// (CodeFailed) and clients before codes ignore: the protocol stays version 3.
// A code this build does not know is kept as it came; it matches none of the
// sentinels below.
type Code uint64

const (
	// CodeFailed: the extension ran and failed (a fault, a helper's error),
	// or the runtime did not say (it predates codes).
	CodeFailed Code = 0
	// CodeNoProgram: the runtime has no extension of that name.
	CodeNoProgram Code = 1
	// CodeRejected: the runtime refused the request itself: it does not
	// follow the protocol (an unknown op, a name too long).
	CodeRejected Code = 2
	// CodeCancelled: the invocation was cancelled before it ended: its time
	// budget ran out, its caller's context ended, an operator cancelled it
	// (kflex cancel), or the runtime was closing. What it held was released.
	CodeCancelled Code = 3
	// CodeNoGlobal: OpGlobal found no global variable of that name, or one
	// smaller than the request asked for.
	CodeNoGlobal Code = 4
)

// The sentinels an *InvokeError matches (errors.Is), one per Code.
var (
	ErrFailed    = errors.New("extension failed")
	ErrNoProgram = errors.New("no such program")
	ErrRejected  = errors.New("request rejected")
	ErrCancelled = errors.New("invocation cancelled")
	ErrNoGlobal  = errors.New("no such global")
)

var codeErrs = map[Code]error{CodeFailed: ErrFailed, CodeNoProgram: ErrNoProgram, CodeRejected: ErrRejected, CodeCancelled: ErrCancelled,
	CodeNoGlobal: ErrNoGlobal}

func (c Code) String() string {
	if err, ok := codeErrs[c]; ok {
		return err.Error()
	}
	return fmt.Sprintf("code %d", uint64(c))
}

// InvokeError is an invocation's failure as the runtime reported it: its
// kind (Code; errors.Is matches the code's sentinel, ErrNoProgram for
// CodeNoProgram) and the runtime's message.
type InvokeError struct {
	Code    Code
	Message string
}

func (e *InvokeError) Error() string {
	if e.Code == CodeFailed {
		return "extension failed: " + e.Message
	}
	return e.Message // the runtime's message says what happened
}

// Is reports whether target is the sentinel of e's code.
func (e *InvokeError) Is(target error) bool {
	err, ok := codeErrs[e.Code]
	return ok && err == target
}

// Result is the runtime's answer to request ID: R0 (and, for OpStatus, Data),
// or the failure Err (an *InvokeError; R0 is then 0, its code having gone to
// Err).
type Result struct {
	ID   uint64
	R0   uint64
	Data []byte // aliases the packet it was decoded from
	Err  error
}

// DecodeResult reads the runtime's answer to a request. An error (wrapping
// ErrMalformed) means b is not a result; a failure the runtime reported is
// the result's Err.
func DecodeResult(b []byte) (Result, error) {
	if len(b) < headerSize || len(b) > MaxPacket {
		return Result{}, fmt.Errorf("%w: result of %d bytes, want %d to %d", ErrMalformed, len(b), headerSize, MaxPacket)
	}
	r := Result{ID: binary.LittleEndian.Uint64(b[4:])}
	status := binary.LittleEndian.Uint32(b)
	if status != statusData && len(b) > MaxResult {
		return Result{}, fmt.Errorf("%w: result %d of %d bytes, want at most %d", ErrMalformed, r.ID, len(b), MaxResult)
	}
	switch status {
	case statusOK:
		if len(b) != headerSize {
			return Result{}, fmt.Errorf("%w: success result %d with %d bytes of message", ErrMalformed, r.ID, len(b)-headerSize)
		}
		r.R0 = binary.LittleEndian.Uint64(b[12:])
	case statusFailed:
		r.Err = &InvokeError{Code: Code(binary.LittleEndian.Uint64(b[12:])), Message: string(b[headerSize:])}
	case statusData:
		r.R0, r.Data = binary.LittleEndian.Uint64(b[12:]), b[headerSize:]
	default:
		return Result{}, fmt.Errorf("%w: result %d has unknown status %d", ErrMalformed, r.ID, status)
	}
	return r, nil
}
