package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Status is what a runtime runs, its answer to OpStatus (kflex status): the
// result's payload is this struct in JSON, whose field names are the
// protocol (new fields may come; a reader ignores those it does not know).
type Status struct {
	Executors int             `json:"executors"` // executors in the pool
	Busy      int             `json:"busy"`      // running an invocation now (or out of the pool)
	Programs  []ProgramStatus `json:"programs"`  // by name
	Processes []ProcessStatus `json:"processes"` // connected processes, by PID
	// Truncated: the lists were cut to fit MaxData (processes first).
	Truncated bool `json:"truncated,omitempty"`
}

// ProgramStatus is one extension a runtime serves.
type ProgramStatus struct {
	Name        string `json:"name"`
	Engine      string `json:"engine"`      // "jit", "interpreter", or "jit+interpreter"
	Invocations uint64 `json:"invocations"` // finished, failed ones included
	Errors      uint64 `json:"errors"`      // failed, cancellations included
}

// ProcessStatus is one process connected to a runtime.
type ProcessStatus struct {
	PID   int       `json:"pid"`
	Slot  int       `json:"slot"`  // its owner-table slot, -1 until it has attached to the heap
	Since time.Time `json:"since"` // when it attached (zero until it has)
}

// MaxData is the largest payload of a result (a status).
const MaxData = 60 << 10

// unknownOp starts the failure a runtime answers an op it does not know with.
const unknownOp = "unknown op"

// IsUnknownOp reports whether err is a runtime's answer to a request whose op
// it does not know: it is older than the op.
func IsUnknownOp(err error) bool {
	var ie *InvokeError
	return errors.As(err, &ie) && strings.Contains(ie.Message, unknownOp)
}

// EncodeStatus is s as a status payload of at most MaxData bytes: lists too
// long to fit are cut, processes first, and the status says so.
func EncodeStatus(s Status) ([]byte, error) {
	for {
		b, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("encode status: %w", err)
		}
		if len(b) <= MaxData {
			return b, nil
		}
		s.Truncated = true
		switch {
		case len(s.Processes) > 0:
			s.Processes = s.Processes[:len(s.Processes)/2]
		case len(s.Programs) > 0:
			s.Programs = s.Programs[:len(s.Programs)/2]
		default:
			return nil, fmt.Errorf("encode status: %d bytes with empty lists, want at most %d", len(b), MaxData)
		}
	}
}

// DecodeStatus reads a status payload.
func DecodeStatus(b []byte) (Status, error) {
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return Status{}, fmt.Errorf("%w: status: %v", ErrMalformed, err)
	}
	return s, nil
}

// AppendData answers request id with r0 and payload data (at most MaxData
// bytes, which the caller ensures).
func AppendData(b []byte, id, r0 uint64, data []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, statusData)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = binary.LittleEndian.AppendUint64(b, r0)
	return append(b, data...)
}
