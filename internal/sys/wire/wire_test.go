package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestHello(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "heap")
	require.NoError(t, err)
	defer f.Close()
	want := Hello{HeapSize: 1 << 30, Kind: HeapArena}
	b, oob := EncodeHello(want, int(f.Fd()))
	// A descriptor goes through a socket as a new one: pass it for real.
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	require.NoError(t, err)
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	require.NoError(t, unix.Sendmsg(pair[0], b, oob, nil, 0))
	rb, roob := HelloBuffers()
	n, oobn, _, _, err := unix.Recvmsg(pair[1], rb, roob, 0)
	require.NoError(t, err)
	got, fd, err := DecodeHello(rb[:n], roob[:oobn])
	require.NoError(t, err)
	defer unix.Close(fd)
	assert.Equal(t, want, got)

	bad := func(mutate func([]byte) []byte) error {
		_, fd, err := DecodeHello(mutate(append([]byte(nil), b...)), nil)
		assert.Equal(t, -1, fd)
		return err
	}
	assert.ErrorIs(t, bad(func(b []byte) []byte { return b[:5] }), ErrVersion)
	assert.ErrorContains(t, bad(func(b []byte) []byte { b[8] = 2; return b }), "runtime has version 2, this build 3")
	assert.ErrorContains(t, bad(func(b []byte) []byte { b[20] = 7; return b }), "unknown heap kind 7")
	err = bad(func(b []byte) []byte { return b })
	assert.ErrorIs(t, err, ErrMalformed)
	assert.ErrorContains(t, err, "greeting carried 0 descriptors")
}

func TestRequest(t *testing.T) {
	b, err := EncodeInvoke(3, "prog", 41)
	require.NoError(t, err)
	r, err := DecodeRequest(b)
	require.NoError(t, err)
	assert.Equal(t, Request{ID: 3, Op: OpInvoke, Arg: 41, Name: "prog"}, r)
	for _, want := range []Request{{ID: 4, Op: OpCancel, Arg: 3}, {ID: 5, Op: OpCancelProgram, Name: "prog"}, {ID: 6, Op: OpStatus}, {ID: 7, Op: OpGlobal, Name: "table", Arg: 520}} {
		b, err := AppendRequest(nil, want)
		require.NoError(t, err)
		r, err := DecodeRequest(b)
		require.NoError(t, err)
		assert.Equal(t, want, r)
	}

	_, err = EncodeInvoke(0, "prog", 0)
	assert.ErrorContains(t, err, "request id 0 is reserved")
	_, err = EncodeInvoke(1, string(make([]byte, MaxNameLen+1)), 0)
	assert.ErrorContains(t, err, "a name of 65 bytes, want 1 to 64")

	unknownOp := append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(unknownOp, 9)
	cancelNamed := append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(cancelNamed, uint32(OpCancel))
	statusNamed := append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(statusNamed, uint32(OpStatus))
	zeroID := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(zeroID[4:], 0)
	for _, tc := range []struct {
		b   []byte
		id  uint64
		msg string
	}{
		{b[:19], 0, "request of 19 bytes, want at least 20"},
		{zeroID, 0, "request id 0 is reserved"},
		{unknownOp, 3, "unknown op 9 in request 3"},
		{cancelNamed, 3, "cancel of request 41: want a request id and no name"},
		{statusNamed, 3, "status request 3: want no name and argument 0"},
		{b[:20], 3, "request 3: a name of 0 bytes"},
		{append(b, make([]byte, MaxNameLen)...), 3, "request 3: a name of 68 bytes"},
	} {
		r, err := DecodeRequest(tc.b)
		assert.ErrorIs(t, err, ErrMalformed, tc.msg)
		assert.ErrorContains(t, err, tc.msg)
		assert.Equal(t, tc.id, r.ID, "the id to answer %q with", tc.msg)
	}
}

func TestResult(t *testing.T) {
	r, err := DecodeResult(EncodeResult(9, 42, nil))
	require.NoError(t, err)
	assert.Equal(t, Result{ID: 9, R0: 42}, r)

	r, err = DecodeResult(EncodeResult(10, 42, errors.New(string(make([]byte, 2*MaxMessage)))))
	require.NoError(t, err)
	var ie *InvokeError
	require.ErrorAs(t, r.Err, &ie)
	assert.Len(t, ie.Message, MaxMessage, "a long message is cut")
	assert.Equal(t, uint64(10), r.ID)

	ok := EncodeResult(1, 0, nil)
	status := append([]byte(nil), ok...)
	binary.LittleEndian.PutUint32(status, 3)
	for _, tc := range []struct {
		b   []byte
		msg string
	}{
		{ok[:19], "result of 19 bytes, want 20 to 61460"},
		{make([]byte, MaxResult+1), "result 0 of 4117 bytes, want at most 4116"},
		{AppendData(nil, 1, 0, make([]byte, MaxData+1)), "result of 61461 bytes"},
		{append(ok, 'x'), "success result 1 with 1 bytes of message"},
		{status, "result 1 has unknown status 3"},
	} {
		_, err := DecodeResult(tc.b)
		assert.ErrorIs(t, err, ErrMalformed, tc.msg)
		assert.ErrorContains(t, err, tc.msg)
	}
}

// TestResultCodes: a failure's code goes in the result's r0 field and comes
// back on the *InvokeError, which matches its code's sentinel and no other;
// an error of another type is CodeFailed; a code from a newer runtime is kept
// and matches no sentinel.
func TestResultCodes(t *testing.T) {
	sentinels := []error{ErrFailed, ErrNoProgram, ErrRejected, ErrCancelled, ErrNoGlobal}
	for code, want := range map[Code]error{CodeFailed: ErrFailed, CodeNoProgram: ErrNoProgram, CodeRejected: ErrRejected, CodeCancelled: ErrCancelled, CodeNoGlobal: ErrNoGlobal} {
		b := EncodeResult(4, 0, &InvokeError{Code: code, Message: "what happened"})
		assert.Equal(t, uint64(code), binary.LittleEndian.Uint64(b[12:]), "the code is in r0's place")
		r, err := DecodeResult(b)
		require.NoError(t, err)
		assert.Equal(t, Result{ID: 4, Err: &InvokeError{Code: code, Message: "what happened"}}, r)
		for _, s := range sentinels {
			assert.Equal(t, s == want, errors.Is(r.Err, s), "%v is %v", code, s)
		}
	}
	r, err := DecodeResult(EncodeResult(5, 0, errors.New("fault at 3")))
	require.NoError(t, err)
	assert.Equal(t, &InvokeError{Code: CodeFailed, Message: "fault at 3"}, r.Err)
	assert.EqualError(t, r.Err, "extension failed: fault at 3")
	r, err = DecodeResult(EncodeResult(6, 0, &InvokeError{Code: CodeNoProgram, Message: `no program "x"`}))
	require.NoError(t, err)
	assert.EqualError(t, r.Err, `no program "x"`, "a code other than failed: the runtime's message alone")

	future := EncodeResult(7, 0, &InvokeError{Code: 9, Message: "new"})
	r, err = DecodeResult(future)
	require.NoError(t, err)
	var ie *InvokeError
	require.ErrorAs(t, r.Err, &ie)
	assert.Equal(t, Code(9), ie.Code)
	assert.Equal(t, "code 9", ie.Code.String())
	for _, s := range sentinels {
		assert.NotErrorIs(t, r.Err, s)
	}
}

// TestAppendNoAlloc: a request or result appended to a buffer large enough
// allocates nothing (Client.Invoke and the runtime encode into buffers they
// reuse).
func TestAppendNoAlloc(t *testing.T) {
	var b [MaxRequest]byte
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		if _, err := AppendInvoke(b[:0], 1, "prog", 41); err != nil {
			t.Fatal(err)
		}
	}), "AppendInvoke")
	r := make([]byte, 0, MaxResult)
	assert.Zero(t, testing.AllocsPerRun(100, func() { r = AppendResult(r[:0], 1, 42, nil) }), "AppendResult")
	got, err := DecodeResult(r)
	require.NoError(t, err)
	assert.Equal(t, Result{ID: 1, R0: 42}, got)
}

// FuzzDecode: no packet makes a decoder panic, and whatever decodes as a
// request or a result encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	inv, _ := EncodeInvoke(7, "add1", 41)
	f.Add(inv)
	f.Add(EncodeResult(7, 42, nil))
	f.Add(EncodeResult(7, 0, errors.New("no program")))
	f.Add(EncodeResult(7, 0, &InvokeError{Code: CodeCancelled, Message: "cancelled on request"}))
	f.Add(AppendData(nil, 7, 0, []byte(`{"executors":1}`)))
	hello, _ := EncodeHello(Hello{HeapSize: 1 << 20, Kind: HeapFile}, -1)
	f.Add(hello)
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := DecodeRequest(b); err == nil {
			again, err := AppendRequest(nil, r)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("request %+v decoded from %x encodes to %x, %v", r, b, again, err)
			}
		}
		if r, err := DecodeResult(b); err == nil {
			// A failure's code and message, and status data, encode back as
			// they came.
			again := EncodeResult(r.ID, r.R0, r.Err)
			if r.Data != nil {
				again = AppendData(nil, r.ID, r.R0, r.Data)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("result %+v decoded from %x encodes to %x", r, b, again)
			}
		}
		DecodeHello(b, nil)
	})
}

// TestStatus: a status goes through a data result whole; one too large for a
// packet is cut, processes first, and says so; an old runtime's answer to
// the op is recognised.
func TestStatus(t *testing.T) {
	since := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	want := Status{Executors: 2, Busy: 1,
		Programs:  []ProgramStatus{{Name: "add1", Engine: "jit", Invocations: 5, Errors: 1}},
		Processes: []ProcessStatus{{PID: 42, Slot: 3, Since: since}, {PID: 43, Slot: -1}}}
	b, err := EncodeStatus(want)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"programs":[{"name":"add1","engine":"jit","invocations":5,"errors":1}]`)
	r, err := DecodeResult(AppendData(nil, 8, 0, b))
	require.NoError(t, err)
	assert.Equal(t, uint64(8), r.ID)
	got, err := DecodeStatus(r.Data)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	big := want
	big.Processes = make([]ProcessStatus, 5000)
	b, err = EncodeStatus(big)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(b), MaxData)
	got, err = DecodeStatus(b)
	require.NoError(t, err)
	assert.True(t, got.Truncated)
	assert.Equal(t, want.Programs, got.Programs, "programs kept")
	assert.Less(t, len(got.Processes), 5000)
	assert.NotEmpty(t, got.Processes)

	_, err = DecodeStatus([]byte("{"))
	assert.ErrorIs(t, err, ErrMalformed)

	// What a runtime answers an op it does not know (before OpStatus, 4).
	unknown := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(unknown, 99)
	binary.LittleEndian.PutUint64(unknown[4:], 5)
	_, err = DecodeRequest(unknown)
	r, derr := DecodeResult(EncodeResult(5, 0, err))
	require.NoError(t, derr)
	assert.True(t, IsUnknownOp(r.Err), "%v", r.Err)
	assert.False(t, IsUnknownOp(&InvokeError{Message: "no program \"x\""}))
}
