package serve_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
)

// fifo appends its executor's node index + 1 to the trace beside the lock at
// its argument (count at lock+8, entries from lock+16), under the lock.
var fifo = `
	mov %r9, %r1
	ldxdw %r1, [%r9+0]
` + serve.LockCall + `
	ldxdw %r1, [%r9+0]
	ldxdw %r6, [%r1+8]
	mov %r7, %r6
	lsh %r7, 3
	add %r7, %r1
	ldxdw %r8, [%r9+16]
	stxdw [%r7+16], %r8
	add %r6, 1
	stxdw [%r1+8], %r6
` + serve.UnlockCall + `
	mov %r0, 0
	exit
` + mcs.BytecodeLock

// TestFIFOTrace queues JIT and interpreting executors one by one behind a lock
// a goroutine holds, and checks they acquire it in queue order: the trace they
// write equals the sequence of tails the lock word showed.
func TestFIFOTrace(t *testing.T) {
	f := start(t)
	insns, err := bytecode.Assemble(fifo)
	require.NoError(t, err)
	rt, err := serve.NewWith(f.h, map[string]asm.Instructions{"fifo": insns}, serve.Options{JIT: 3, Interpreted: 1})
	require.NoError(t, err)
	defer rt.Close()
	p, err := mcs.Attach(f.h)
	require.NoError(t, err)
	defer p.Detach()
	lock, err := f.h.Alloc(16 + 8*8)
	require.NoError(t, err)
	clear(f.h.Bytes(lock, 16+8*8))
	m, err := p.Mutex(lock)
	require.NoError(t, err)
	word := f.h.Uint64(lock)

	require.NoError(t, m.Lock())
	var queued []uint64
	var wg sync.WaitGroup
	for range 4 {
		tail := atomic.LoadUint64(word) >> 32
		wg.Go(func() {
			_, err := rt.Invoke(context.Background(), "fifo", f.h.Base()+lock)
			assert.NoError(t, err)
		})
		require.Eventually(t, func() bool { return atomic.LoadUint64(word)>>32 != tail },
			5*time.Second, 100*time.Microsecond, "executor never queued")
		queued = append(queued, atomic.LoadUint64(word)>>32)
	}
	m.Unlock()
	wg.Wait()
	require.Equal(t, uint64(4), *f.h.Uint64(lock + 8))
	var trace []uint64
	for i := range 4 {
		trace = append(trace, *f.h.Uint64(lock + 16 + uint64(8*i)))
	}
	assert.Equal(t, queued, trace, "acquired in queue order")
	assert.Zero(t, atomic.LoadUint64(word))
}
