package serve_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// counter8 increments, for 100 rounds, the counter of lock (round % 8) of the
// array of eight {lock word, counter} pairs at its argument, under that lock.
const counter8 = `
	mov %r9, %r1
	mov %r6, 0
loop:
	ldxdw %r1, [%r9+0]
	mov %r7, %r6
	and %r7, 7
	lsh %r7, 4
	add %r1, %r7
	stxdw [%r10-8], %r1
` + serve.LockCall + `
	ldxdw %r1, [%r10-8]
	ldxdw %r7, [%r1+8]
	add %r7, 1
	stxdw [%r1+8], %r7
` + serve.UnlockCall + `
	add %r6, 1
	jlt %r6, 100, loop
	mov %r0, 0
	exit
` + mcs.BytecodeLock

const roleMixed = "serve-mixed"

// TestMixedContention: two user processes of four goroutines each (Go lock),
// and the runtime's four JIT executors and one interpreting executor (bytecode
// lock), all increment counters under the same eight locks: 220,000
// acquisitions, exact totals. (Kernel threads on a BPF arena join once the
// kernel backend shares the heap layout.)
func TestMixedContention(t *testing.T) {
	if testutil.Role() == roleMixed {
		mixedChild(t)
		return
	}
	f := start(t)
	insns, err := bytecode.Assemble(counter8)
	require.NoError(t, err)
	rt, err := serve.NewWith(f.h, map[string]asm.Instructions{"counter8": insns}, serve.Options{JIT: 4, Interpreted: 1})
	require.NoError(t, err)
	defer rt.Close()
	locks, err := f.h.Alloc(8 * 16)
	require.NoError(t, err)
	clear(f.h.Bytes(locks, 8*16))
	const children, goroutines, goRounds = 2, 4, 15000
	const invokers, invocations = 5, 200 // × 100 rounds each
	var offs []string
	for i := range 8 {
		offs = append(offs, strconv.FormatUint(locks+uint64(16*i), 10))
	}
	var wg sync.WaitGroup
	for range children {
		cmd := testutil.Child(t, "TestMixedContention", roleMixed, "KFLEX_HEAP="+f.h.Name(),
			"KFLEX_LOCKS="+strings.Join(offs, ","), fmt.Sprintf("KFLEX_ROUNDS=%d", goRounds),
			fmt.Sprintf("KFLEX_GOROUTINES=%d", goroutines))
		wg.Go(func() {
			out, err := cmd.Output()
			assert.NoError(t, err, "%s", out)
		})
	}
	for range invokers {
		wg.Go(func() {
			for range invocations {
				if _, err := rt.Invoke("counter8", f.h.Base()+locks); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := uint64(0)
	for i := range 8 {
		total += *f.h.Uint64(locks + uint64(16*i) + 8)
		assert.Zero(t, *f.h.Uint64(locks + uint64(16*i)), "lock %d left held", i)
	}
	want := uint64(children*goroutines*goRounds + invokers*invocations*100)
	assert.Equal(t, want, total)
	t.Logf("%d acquisitions", total)
}

func mixedChild(t *testing.T) {
	h, err := userspace.Attach(os.Getenv("KFLEX_HEAP"), nil)
	require.NoError(t, err)
	defer h.Close()
	offs := testutil.EnvUints(t, "KFLEX_LOCKS")
	rounds, goroutines := int(testutil.EnvUint(t, "KFLEX_ROUNDS")), int(testutil.EnvUint(t, "KFLEX_GOROUTINES"))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for r := range rounds {
				p := h.Base() + userspace.Ptr(offs[(g+r)%len(offs)])
				m, err := h.Mutex(p)
				if err != nil {
					t.Error(err)
					return
				}
				m.Lock()
				*h.Uint64(p + 8)++
				m.Unlock()
			}
		})
	}
	wg.Wait()
}
