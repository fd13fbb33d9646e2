package mcs

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
)

// lockCall and unlockCall call the bytecode lock on the lock whose address
// is the context's first word (lockCtx).
var (
	lockCall   = "\n\tldxdw %r1, [%r9+0]" + abi.LockCall
	unlockCall = "\n\tldxdw %r1, [%r9+0]" + abi.UnlockCall
)

// lockCtx is the context of programs using lockCall on the lock at off with
// node n, then the extra words.
func (w *world) lockCtx(off uint64, n Node, extra ...uint64) []byte {
	return CallContext(w.h.Base()+off, w.h.Base(), n, w.p.Held(), w.h.Header().NodeOff, extra...)
}

// jitMachine is a JIT sandbox over w's heap with the lock's helpers, closed
// with the test.
func (w *world) jitMachine(t testing.TB) *jit.Machine {
	scratch, err := w.h.Alloc(jit.ScratchSize)
	require.NoError(t, err)
	m, err := jit.NewMachineIn(jit.Region{Base: w.h.At(0), Size: w.h.Size(), Canon: w.h.CanonBase(), Scratch: scratch})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	m.Helpers = w.helpers()
	return m
}

// interpMachine is an interpreter over w's heap with the lock's helpers.
func (w *world) interpMachine() *interp.Machine {
	im := interp.NewMachine()
	im.AttachHeap(w.h.At(0), w.h.Size(), w.h.CanonBase())
	im.Helpers = w.helpers()
	im.MaxInsns = 4e9 // a hang becomes an error, eventually
	return im
}

// counterProgram takes the lock at ctx[0] for ctx[40] rounds and increments
// the counter beside the lock word each time, through the bytecode lock.
var counterProgram = `
	mov %r9, %r1
	ldxdw %r6, [%r9+40]
loop:` + lockCall + `
	ldxdw %r1, [%r9+0]
	ldxdw %r7, [%r1+8]
	add %r7, 1
	stxdw [%r1+8], %r7` + unlockCall + `
	sub %r6, 1
	jne %r6, 0, loop
	mov %r0, 0
	exit
` + BytecodeLock

// helpers are the lock's helpers for executors of w's process.
func (w *world) helpers() map[int32]interp.Helper {
	return map[int32]interp.Helper{
		HelperWake: func(_ interp.Memory, addr, _, _, _, _ uint64) (uint64, error) { return 0, WakeHelper(addr) },
		HelperLockCheck: func(_ interp.Memory, lock, node, idx, held, _ uint64) (uint64, error) {
			return w.p.LockCheck(lock, node, idx, held), nil
		},
	}
}

// compileBoth assembles text for the JIT (closed with the test) and the
// interpreter.
func compileBoth(t *testing.T, text string) (*jit.Program, *interp.Program) {
	insns, err := bytecode.Assemble(text)
	require.NoError(t, err)
	jp, err := jit.Compile(insns)
	require.NoError(t, err)
	t.Cleanup(func() { jp.Close() })
	ip, err := interp.Load(insns)
	require.NoError(t, err)
	return jp, ip
}

// TestBytecodeLockMixed has goroutines (Go lock), JIT-compiled extensions and an
// interpreted one increment one counter under one lock word: the bytecode lock
// and the Go lock must exclude each other exactly.
func TestBytecodeLockMixed(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	w := newWorld(t, 4<<20)
	off := w.locks(t, 1)[0]
	jp, ip := compileBoth(t, counterProgram)

	const goroutines, goRounds, jitExecs, jitRounds, interpRounds = 4, 10000, 2, 20000, 5000
	ctxFor := func(n Node, rounds uint64) []byte { return w.lockCtx(off, n, rounds) }
	errs := make(chan error, goroutines+jitExecs+1)
	var wg sync.WaitGroup
	for range jitExecs {
		m := w.jitMachine(t)
		n := w.p.TakeNode()
		defer w.p.GiveNode(n)
		wg.Go(func() {
			_, err := m.Run(jp, ctxFor(n, jitRounds))
			errs <- err
		})
	}
	n := w.p.TakeNode()
	defer w.p.GiveNode(n)
	im := w.interpMachine()
	wg.Go(func() {
		_, err := im.Run(ip, ctxFor(n, interpRounds))
		errs <- err
	})
	hammer(t, w.p, []uint64{off}, goroutines, goRounds)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("executors did not finish: the lock is stuck")
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	want := uint64(goroutines*goRounds + jitExecs*jitRounds + interpRounds)
	assert.Equal(t, want, *w.h.Uint64(off + 8), "every increment happened exactly once")
	assert.Zero(t, *w.h.Uint64(off), "lock word free at the end")
	t.Logf("%d acquisitions: %d Go, %d JIT, %d interpreted", want, goroutines*goRounds, jitExecs*jitRounds, interpRounds)
}

func TestBytecodeLockAssembles(t *testing.T) {
	insns, err := bytecode.Assemble("call local mcs_lock\ncall local mcs_unlock\nexit\n" + BytecodeLock)
	require.NoError(t, err)
	require.NoError(t, bytecode.Validate(insns))
	assert.Equal(t, fmt.Sprint(Held(3, 0x1005)), fmt.Sprint(uint64(1|5<<4|4<<16)))
}

// TestBytecodeHolderKilled: a Go holder in a child is SIGKILLed while a JIT
// extension, then an interpreted one, wait for its lock; each gets
// LockOwnerDied through HelperLockCheck, repairs and unlocks. A lock then
// released without repair gives them LockNotRecoverable.
func TestBytecodeHolderKilled(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	jp, ip := compileBoth(t, LockOnceProgram)
	for _, engine := range []string{"jit", "interp"} {
		t.Run(engine, func(t *testing.T) {
			w := newWorld(t, 1<<20)
			off := w.locks(t, 1)[0]
			n := w.p.TakeNode()
			defer w.p.GiveNode(n)
			run := func() (uint64, error) {
				if engine == "jit" {
					return w.jitMachine(t).Run(jp, w.lockCtx(off, n))
				}
				return w.interpMachine().Run(ip, w.lockCtx(off, n))
			}
			// waitFor runs the extension while then() is done, and returns
			// its r0 (boundedly).
			waitFor := func(then func()) int64 {
				got := make(chan int64, 1)
				go func() {
					r0, err := run()
					assert.NoError(t, err)
					got <- int64(r0)
				}()
				w.queuedAfter(t, off, 0)
				then()
				select {
				case r0 := <-got:
					return r0
				case <-time.After(20 * time.Second):
					t.Fatal("the extension still waits 20 s later")
					return 0
				}
			}
			c := w.startLocker(t, off, actHold)
			require.Equal(t, "held", c.line(t))
			killed := time.Now()
			assert.Equal(t, int64(LockOwnerDied), waitFor(c.kill))
			t.Logf("SIGKILL of the holder -> %s waiter returned: %v", engine, time.Since(killed))
			assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "repaired and unlocked")

			// Not recoverable: a Go party takes over from a dead holder and
			// unlocks without repair; the extension gets LockNotRecoverable.
			c = w.startLocker(t, off, actHold)
			require.Equal(t, "held", c.line(t))
			c.kill()
			m := mutex(t, w.p, off)
			require.ErrorIs(t, m.Lock(), ErrOwnerDied)
			assert.Equal(t, int64(LockNotRecoverable), waitFor(m.Unlock))
			w.settled(t, off, wordOwnerDied)
		})
	}
}

// TestBytecodeWaiterBehindDead: a JIT extension queued behind a child's
// waiter that is SIGKILLed (the queue's head, asleep; or a middle waiter,
// behind a waiter of ours) gets the lock once the holder unlocks: its
// HelperLockCheck replaces the dead head, or its granter skips the dead node.
func TestBytecodeWaiterBehindDead(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	jp, _ := compileBoth(t, LockOnceProgram)
	for _, ahead := range []bool{false, true} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			sc := newScene(t, ahead)
			w, off, m, first, tail := sc.w, sc.off, sc.m, sc.first, sc.tail
			c := w.startLocker(t, off, actOnce)
			tail = w.queuedAfter(t, off, tail)
			if !ahead {
				require.Eventually(t, func() bool { return DecodeWord(atomic.LoadUint64(w.h.Uint64(off))).HeadSleeping },
					20*time.Second, 100*time.Microsecond, "the child's head never slept")
			}
			got := w.runExtension(t, jp, off)
			w.queuedAfter(t, off, tail)
			c.kill()
			m.Unlock()
			if first != nil {
				require.NoError(t, result(t, first))
			}
			w.extensionAcquired(t, got, off, "waits", nil)
			w.settled(t, off, 0)
		})
	}
}

// extensionAcquired waits for the r0 of an extension runExtension started on
// the lock at off and checks that it took the lock. If it has not returned
// after 20 s, rescue (if not nil) lets it end before the heap is unmapped,
// and the test fails saying what the extension still waited for.
func (w *world) extensionAcquired(t *testing.T, got <-chan int64, off uint64, waitsFor string, rescue func()) {
	t.Helper()
	select {
	case r0 := <-got:
		assert.Equal(t, int64(LockAcquired), r0)
	case <-time.After(20 * time.Second):
		word := DecodeWord(atomic.LoadUint64(w.h.Uint64(off)))
		if rescue != nil {
			rescue()
			<-got
		}
		t.Fatalf("the extension still %s 20 s later: word %+v", waitsFor, word)
	}
}

// granter is the first of a lock's queue in the granter tests: a JIT
// extension (got) or a Go waiter of this process (first).
type granter struct {
	got   <-chan int64
	first chan error
}

// eachGranter runs f as a subtest for a JIT granter and for a Go one, each on
// a scene of its own: start queues the granter on sc's lock, behind sc's hold,
// when f is ready for it. Without the JIT the test is skipped.
func eachGranter(t *testing.T, f func(t *testing.T, sc *scene, start func() granter)) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	jp, _ := compileBoth(t, LockOnceProgram)
	for _, kind := range []string{"jit", "go"} {
		t.Run(kind, func(t *testing.T) {
			sc := newScene(t, false)
			f(t, sc, func() granter { return startGranter(t, sc, jp, kind) })
		})
	}
}

// startGranter queues a granter of kind "jit" or "go" on sc's lock, behind
// sc's hold.
func startGranter(t *testing.T, sc *scene, jp *jit.Program, kind string) granter {
	if kind == "jit" {
		return granter{got: sc.w.runExtension(t, jp, sc.off)}
	}
	return granter{first: lockAsync(mutex(t, sc.w.p, sc.off), &sc.seq, 1)}
}

// acquired checks that the granter took the lock (extensionAcquired; a Go
// granter within 20 s, rescued the same way).
func (g granter) acquired(t *testing.T, w *world, off uint64, waitsFor string, rescue func()) {
	t.Helper()
	if g.got != nil {
		w.extensionAcquired(t, g.got, off, waitsFor, rescue)
		return
	}
	select {
	case err := <-g.first:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		word := DecodeWord(atomic.LoadUint64(w.h.Uint64(off)))
		if rescue != nil {
			rescue()
			<-g.first
		}
		t.Fatalf("the Go granter still %s 20 s later: word %+v", waitsFor, word)
	}
}

// runExtension runs the compiled lock program jp on the lock at off in a JIT
// machine of its own, with a node of this process's, in the background: its
// r0 comes on the channel.
func (w *world) runExtension(t *testing.T, jp *jit.Program, off uint64) <-chan int64 {
	n := w.p.TakeNode()
	t.Cleanup(func() { w.p.GiveNode(n) })
	got := make(chan int64, 1)
	jm := w.jitMachine(t)
	go func() {
		r0, err := jm.Run(jp, w.lockCtx(off, n))
		assert.NoError(t, err)
		got <- int64(r0)
	}()
	return got
}
