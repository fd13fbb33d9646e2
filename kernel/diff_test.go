package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/progen"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit/interp"
)

const diffBodyLen = 48

// loadPace spaces the differential tests' program loads. Loading and freeing
// programs at fuzzing speed (thousands a second) deadlocked the 6.18 kernel of
// the development machine in its BPF JIT allocator (see main_test.go); at one
// load per pace the deferred frees keep up.
const loadPace = 10 * time.Millisecond

var lastLoad time.Time

func pace() {
	if d := time.Until(lastLoad.Add(loadPace)); d > 0 {
		time.Sleep(d)
	}
	lastLoad = time.Now()
}

// diff generates a program and a context from data, runs both in the kernel and
// in the interpreter, and reports a mismatch. rejected is set when the kernel
// verifier refused the program (progen's subset should make that rare).
func diff(data []byte) (rejected error, err error) {
	src := progen.NewSource(data)
	ctx := progen.Context(src)
	insns := progen.Generate(src, diffBodyLen)
	if err := bytecode.Validate(insns); err != nil {
		return nil, fmt.Errorf("generated an invalid program: %w\n%v", err, insns)
	}
	pace()
	kp, err := Load(insns, Syscall, nil)
	if err != nil {
		var ve *VerifierError
		if errors.As(err, &ve) {
			return err, nil
		}
		return nil, err
	}
	defer kp.Close()
	kr0, kctx, err := kp.Run(ctx)
	if err != nil {
		return nil, err
	}
	ip, err := interp.Load(insns)
	if err != nil {
		return nil, err
	}
	ictx := bytes.Clone(ctx)
	ir0, err := interp.NewMachine().Run(ip, ictx)
	if err != nil {
		return nil, fmt.Errorf("interpreter: %w\n%v", err, insns)
	}
	if uint32(ir0) != kr0 || !bytes.Equal(ictx, kctx) {
		return nil, fmt.Errorf("kernel and interpreter disagree:\nr0 kernel %#x, interpreter %#x\nctx kernel      %x\nctx interpreter %x\nprogram:\n%v",
			kr0, uint32(ir0), kctx, ictx, insns)
	}
	return nil, nil
}

// TestKernelDiff runs a fixed set of generated programs in the kernel and the
// interpreter: same r0, same registers, same memory.
func TestKernelDiff(t *testing.T) {
	requireKernel(t)
	n := 400
	if testing.Short() {
		n = 100
	}
	rng := rand.New(rand.NewPCG(42, 7))
	rejected := 0
	for i := range n {
		data := testutil.RandomBytes(rng, 512)
		rej, err := diff(data)
		require.NoError(t, err, "seed %d", i)
		if rej != nil {
			rejected++
			t.Logf("seed %d: kernel rejected: %v", i, rej)
		}
	}
	t.Logf("%d programs, %d rejected by the kernel verifier", n, rejected)
	require.LessOrEqual(t, rejected, n/20, "the generator should stay inside what the kernel accepts")
}

// FuzzKernelDiff is the same comparison driven by go test -fuzz; its
// interesting inputs are kept in testdata/fuzz/FuzzKernelDiff.
func FuzzKernelDiff(f *testing.F) {
	requireKernel(f)
	f.Add(make([]byte, 64))
	f.Add(bytes.Repeat([]byte{0xff, 0x13, 0x07}, 100))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := diff(data); err != nil {
			t.Fatal(err)
		}
	})
}
