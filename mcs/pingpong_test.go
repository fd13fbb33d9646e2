package mcs

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
)

// pingPongProgram is `kflex bench lock`'s pingpong extension: it takes the
// lock at ctx[0] until it has passed the turn word beside it (lock+8) back
// from 1 to 0 ctx[40] times, counting every acquisition at lock+24 (the
// watchdog's progress).
var pingPongProgram = `
	mov %r9, %r1
	mov %r6, 0
loop:` + lockCall + `
	ldxdw %r1, [%r9+0]
	ldxdw %r7, [%r1+24]
	add %r7, 1
	stxdw [%r1+24], %r7
	ldxdw %r7, [%r1+8]
	jne %r7, 1, skip
	stdw [%r1+8], 0
	add %r6, 1
skip:` + unlockCall + `
	ldxdw %r7, [%r9+40]
	jlt %r6, %r7, loop
	mov %r0, %r6
	exit
` + BytecodeLock

// TestPingPong is `kflex bench lock`'s pingpong in one process: goroutines
// (Go lock) and extensions (bytecode lock; JIT, interpreted, or both) pass
// the turn beside one lock back and forth, so that nearly every acquisition
// queues behind the other side, whose node (an executor's is reused for
// every lock call) is freed and queued again between two of ours. A
// watchdog fails the test, with the lock word and the slot's nodes, when
// nobody acquires for 2 s. KFLEX_PINGPONG=duration repeats it for that long.
func TestPingPong(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	soak := time.Duration(0)
	if s := os.Getenv("KFLEX_PINGPONG"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err)
		soak = d
	}
	jp, ip := compileBoth(t, pingPongProgram)
	configs := []struct {
		name         string
		goroutines   int
		engines      []string
		rounds       uint64
		soakedRounds uint64
	}{
		{"go+jit", 1, []string{"jit"}, 2000, 50000},
		{"go+interp", 1, []string{"interp"}, 300, 20000},
		{"2go+2jit", 2, []string{"jit", "jit"}, 300, 20000},
		{"2go+jit+interp", 2, []string{"jit", "interp"}, 50, 2000},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			rounds := c.rounds
			if soak > 0 {
				rounds = c.soakedRounds
			}
			deadline := time.Now().Add(soak)
			for iter := 0; ; iter++ {
				pingPong(t, jp, ip, c.goroutines, c.engines, rounds)
				if t.Failed() || !time.Now().Before(deadline) {
					t.Logf("%d runs of %d rounds", iter+1, rounds)
					return
				}
			}
		})
	}
}

func pingPong(t *testing.T, jp *jit.Program, ip *interp.Program, goroutines int, engines []string, rounds uint64) {
	w := newWorld(t, 4<<20)
	off := w.locks(t, 1)[0]
	*w.h.Uint64(off + 24) = 0
	var goAcq atomic.Uint64
	errs := make(chan error, goroutines+len(engines))
	var wg sync.WaitGroup
	for _, engine := range engines {
		n := w.p.TakeNode()
		defer w.p.GiveNode(n)
		ctx := w.lockCtx(off, n, rounds)
		switch engine {
		case "jit":
			m := w.jitMachine(t)
			wg.Go(func() { _, err := m.Run(jp, ctx); errs <- err })
		default:
			im := w.interpMachine()
			wg.Go(func() { _, err := im.Run(ip, ctx); errs <- err })
		}
	}
	m := mutex(t, w.p, off)
	for range goroutines {
		wg.Go(func() {
			for n := uint64(0); n < rounds*uint64(len(engines))/uint64(goroutines); {
				if err := m.Lock(); err != nil {
					errs <- err
					return
				}
				goAcq.Add(1)
				if *w.h.Uint64(off + 8) == 0 {
					*w.h.Uint64(off + 8) = 1
					n++
				}
				m.Unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	progress := func() uint64 { return goAcq.Load() + atomic.LoadUint64(w.h.Uint64(off+24)) }
	last, since := progress(), time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "lock word free at the end")
			return
		case <-tick.C:
		}
		if p := progress(); p != last {
			last, since = p, time.Now()
			continue
		}
		if time.Since(since) < 2*time.Second {
			continue
		}
		// Stuck: what the queue looks like, and where everyone is. The
		// parties cannot be stopped, and the heap cannot be unmapped under
		// them (as the test's cleanups would): exit with the dump.
		var b strings.Builder
		fmt.Fprintf(&b, "no acquisition for 2 s after %d: word %#x %+v\n", last, atomic.LoadUint64(w.h.Uint64(off)),
			DecodeWord(atomic.LoadUint64(w.h.Uint64(off))))
		npp := w.h.Header().NodesPerProc
		for i := w.p.Slot() * npp; i < (w.p.Slot()+1)*npp; i++ {
			if q := w.p.QueueNode(i); q != (QueueNode{}) {
				fmt.Fprintf(&b, "  node %d (idx+1 %d): %+v\n", i, i+1, q)
			}
		}
		stacks := make([]byte, 1<<20)
		stacks = stacks[:runtime.Stack(stacks, true)]
		fmt.Fprintf(os.Stderr, "--- FAIL: %s: %s\n%s", t.Name(), b.String(), stacks)
		os.Exit(2)
	}
}
