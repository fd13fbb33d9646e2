package interp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/isatest"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit/interp"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestISA runs every file of testdata/isa.
func TestISA(t *testing.T) {
	cases, err := isatest.Load("../../testdata/isa")
	require.NoError(t, err)
	m := interp.NewMachine()
	m.Helpers = isatest.Helpers()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			p, err := interp.LoadBytes(c.Raw)
			require.NoError(t, err)
			r0, err := m.Run(p, bytes.Clone(c.Mem))
			require.NoError(t, c.Check(r0, err))
			if err != nil {
				var re *interp.RuntimeError
				require.ErrorAs(t, err, &re)
			}
		})
	}
}

func load(t testing.TB, src string) *interp.Program {
	t.Helper()
	insns, err := bytecode.Assemble(src)
	require.NoError(t, err)
	p, err := interp.Load(insns)
	require.NoError(t, err)
	return p
}

func TestLoadErrors(t *testing.T) {
	for src, want := range map[string]string{
		"mov %r0, 1":              "instruction 0: MovImm: last instruction falls off the end of the program",
		"call runtime 7\nexit":    "instruction 0: call to kernel function (BTF id 7) is not supported",
		"ja +3\nexit":             "instruction 0: Ja: target 4 outside the program (0..1)",
		"mov %r0, 0\nja -3\nexit": "instruction 1: Ja: target -1 outside the program (0..2)",
	} {
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err)
		_, err = interp.Load(insns)
		assert.EqualError(t, err, want, src)
	}
	_, err := interp.LoadBytes([]byte{1, 2, 3})
	assert.EqualError(t, err, "bytecode length 3 is not a multiple of 8")
	// lddw with a map reference needs a loader.
	_, err = interp.LoadBytes([]byte{0x18, 0x11, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0})
	assert.ErrorContains(t, err, "instruction 0: lddw with pseudo source 1 needs a loader")
}

func TestRuntimeErrors(t *testing.T) {
	m := interp.NewMachine()
	m.MaxInsns = 1000
	_, err := m.Run(load(t, "loop:\nja loop\nexit"), nil)
	assert.ErrorIs(t, err, interp.ErrInsnLimit)
	var re *interp.RuntimeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, 0, re.Insn)

	m.Helpers = map[int32]interp.Helper{1: func(interp.Memory, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
		return 0, errors.New("boom")
	}}
	_, err = m.Run(load(t, "mov %r0, 0\ncall 1\nexit"), nil)
	assert.EqualError(t, err, "instruction 1: helper failed: helper 1: boom")

	// addr_space_cast (mov64 with offset 1) needs a heap to cast into.
	cast, err := interp.LoadBytes([]byte{0xbf, 0xa0, 1, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0})
	require.NoError(t, err)
	_, err = m.Run(cast, nil)
	assert.ErrorIs(t, err, interp.ErrNoHeap)
}

// TestHelperMemory checks that helpers reach program memory only through the
// machine's regions.
func TestHelperMemory(t *testing.T) {
	m := interp.NewMachine()
	m.Helpers = map[int32]interp.Helper{1: func(m interp.Memory, r1, r2, _, _, _ uint64) (uint64, error) {
		b, err := m.Bytes(r1, r2, true)
		if err != nil {
			return 0, err
		}
		copy(b, "hello")
		return uint64(len(b)), nil
	}}
	ctx := make([]byte, 8)
	r0, err := m.Run(load(t, "call 1\nexit"), ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(8), r0)
	assert.Equal(t, "hello\x00\x00\x00", string(ctx))
	_, err = m.Run(load(t, "add %r2, 1\ncall 1\nexit"), ctx)
	assert.ErrorContains(t, err, "memory access outside the program's regions: 9 bytes at")
}

// FuzzInterp runs random bytes as programs: they must be rejected or run to an
// end or a RuntimeError, never panic.
func FuzzInterp(f *testing.F) {
	cases, err := isatest.Load("../../testdata/isa")
	require.NoError(f, err)
	for _, c := range cases {
		f.Add(c.Raw, c.Mem)
	}
	f.Fuzz(func(t *testing.T, raw, mem []byte) {
		p, err := interp.LoadBytes(raw)
		if err != nil {
			var e *bytecode.Error
			if !errors.As(err, &e) && len(raw)%8 == 0 {
				t.Fatalf("load error of unexpected type %T: %v", err, err)
			}
			return
		}
		m := interp.NewMachine()
		m.Helpers = isatest.Helpers()
		m.MaxInsns = 100000
		m.MayGoto = 1000
		_, err = m.Run(p, mem)
		if err != nil {
			var re *interp.RuntimeError
			require.ErrorAs(t, err, &re)
		}
	})
}

// TestCancel stops a program that loops forever; a goroutine that spins in the
// interpreter also yields, so other goroutines keep running on a single P.
func TestCancel(t *testing.T) {
	m := interp.NewMachine()
	p := load(t, "mov %r0, 0\nloop:\nadd %r0, 1\nja loop\nexit")
	done := make(chan error)
	go func() {
		_, err := m.Run(p, nil)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	m.Cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, abi.ErrCancelled)
		var re *interp.RuntimeError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, 2, re.Insn)
	case <-time.After(10 * time.Second):
		t.Fatal("Cancel did not stop the program")
	}
}

// TestEntryArgument: with a heap attached, r3 at entry is the context's first
// word masked into the heap, whatever the word is.
func TestEntryArgument(t *testing.T) {
	heap := make([]byte, 4096)
	base := uintptr(unsafe.Pointer(&heap[0]))
	p, err := interp.Load(asm.Instructions{asm.Mov.Reg(asm.R0, asm.R3), asm.Return()})
	require.NoError(t, err)
	m := interp.NewMachine()
	ctx := make([]byte, 8)
	binary.LittleEndian.PutUint64(ctx, 0xdead_0000_0123)
	r0, err := m.Run(p, ctx)
	require.NoError(t, err)
	assert.Zero(t, r0, "no heap: r3 is not set")
	m.AttachHeap(unsafe.Pointer(&heap[0]), uint64(len(heap)), uint64(base))
	r0, err = m.Run(p, ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(base)+0x123, r0)
	r0, err = m.Run(p, ctx[:4])
	require.NoError(t, err)
	assert.Zero(t, r0, "a context shorter than a word: r3 is not set")
	runtime.KeepAlive(heap)
}
