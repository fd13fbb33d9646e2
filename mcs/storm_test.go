package mcs

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
)

// stormer takes the lock at off over and over until the word at stop is set,
// checking mutual exclusion with the flag word at off+8: a holder sets it on
// entry and clears it on exit, so a holder that got the lock without
// ErrOwnerDied must find it clear; one that got ErrOwnerDied repairs it (its
// predecessor died inside). It counts its acquisitions in the word at count.
// The critical section lasts a few hundred nanoseconds, so that waiters queue
// and park, and are killed there too.
func stormer(p *Process, off, stop, counter uint64) error {
	m, err := p.Mutex(off)
	if err != nil {
		return err
	}
	flag, count := p.h.Uint64(off+8), p.h.Uint64(counter)
	for atomic.LoadUint64(p.h.Uint64(stop)) == 0 {
		err := m.Lock()
		switch {
		case errors.Is(err, ErrOwnerDied):
			atomic.StoreUint64(flag, 0)
			m.Consistent()
		case err != nil:
			return err
		case atomic.LoadUint64(flag) != 0:
			return fmt.Errorf("lock taken while another holder was inside (word %+v)", DecodeWord(atomic.LoadUint64(m.word)))
		}
		atomic.StoreUint64(flag, 1)
		atomic.AddUint64(count, 1)
		for range 100 {
			if atomic.LoadUint64(flag) != 1 {
				return errors.New("another holder inside")
			}
		}
		atomic.StoreUint64(flag, 0)
		m.Unlock()
	}
	return nil
}

// stormProgram is stormer in bytecode, for rounds ctx[40] rounds: it counts
// its acquisitions at off+32 and returns 0, or 1 if it found another holder
// inside, 2 on LockNotRecoverable.
var stormProgram = `
	mov %r9, %r1
	ldxdw %r6, [%r9+40]
loop:` + lockCall + `
	jeq %r0, -131, unrecoverable
	ldxdw %r1, [%r9+0]
	jne %r0, -130, check
	stdw [%r1+8], 0` + abi.ConsistentCall + `
	ja enter
check:
	ldxdw %r7, [%r1+8]
	jne %r7, 0, broken
enter:
	stdw [%r1+8], 1
	ldxdw %r7, [%r1+32]
	add %r7, 1
	stxdw [%r1+32], %r7
	stdw [%r1+8], 0` + unlockCall + `
	sub %r6, 1
	jne %r6, 0, loop
	mov %r0, 0
	exit
broken:
	mov %r0, 1
	exit
unrecoverable:
	mov %r0, 2
	exit
` + BytecodeLock

// TestKillStorm: goroutines, a JIT executor and an interpreter of this
// process, and goroutines of child processes hammer one lock while children are SIGKILLed at random moments (inside the critical
// section, queued, granting, attaching...) and replaced. Nobody ever holds
// the lock together with a live holder, this process keeps acquiring it, and
// at the end the lock, the node table and the owner table are as they began.
func TestKillStorm(t *testing.T) {
	w := newWorld(t, 8<<20)
	off := w.locks(t, 1)[0]
	*w.h.Uint64(off + 16), *w.h.Uint64(off + 24) = 0, 0 // our acquisitions, the children's
	stop, err := w.h.Alloc(8)
	require.NoError(t, err)
	*w.h.Uint64(stop) = 0
	length := 3 * time.Second
	if testing.Short() {
		length = time.Second
	}
	*w.h.Uint64(off + 32) = 0 // the executors' acquisitions
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { errs <- stormer(w.p, off, stop, off+16) })
	}
	jp, ip := compileBoth(t, stormProgram)
	for _, engine := range []string{"jit", "interp"} {
		n := w.p.TakeNode()
		defer w.p.GiveNode(n)
		run := func() (uint64, error) { return w.interpMachine().Run(ip, w.lockCtx(off, n, 100)) }
		if engine == "jit" {
			m := w.jitMachine(t)
			run = func() (uint64, error) { return m.Run(jp, w.lockCtx(off, n, 100)) }
		}
		wg.Go(func() {
			for atomic.LoadUint64(w.h.Uint64(stop)) == 0 {
				if r0, err := run(); err != nil || r0 != 0 {
					errs <- fmt.Errorf("%s: r0 %d, %v", engine, r0, err)
					return
				}
			}
			errs <- nil
		})
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 15))
	// A child that found exclusion broken exits 3 (and says why) instead of
	// dying of our SIGKILL.
	ended := func(c *lockerChild) {
		ws, _ := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() && !ws.Exited() || ws.Exited() && ws.ExitStatus() != 0 {
			t.Errorf("child %v: %s", c.cmd.ProcessState, <-c.lines)
		}
	}
	var children []*lockerChild
	kills := 0
	for deadline := time.Now().Add(length); time.Now().Before(deadline); {
		for len(children) < 3 {
			children = append(children, w.startLocker(t, off, actStorm, fmt.Sprintf("KFLEX_STOP=%d", stop)))
		}
		time.Sleep(time.Duration(1+rng.IntN(15)) * time.Millisecond)
		i := rng.IntN(len(children))
		children[i].kill()
		ended(children[i])
		children = append(children[:i], children[i+1:]...)
		kills++
	}
	atomic.StoreUint64(w.h.Uint64(stop), 1)
	for _, c := range children {
		c.wait(t)
		ended(c)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("our goroutines still run 30 s after stop: word %+v", DecodeWord(atomic.LoadUint64(w.h.Uint64(off))))
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d kills; acquisitions: %d our goroutines', %d our executors', %d the children's", kills,
		*w.h.Uint64(off + 16), *w.h.Uint64(off + 32), *w.h.Uint64(off + 24))
	ws := w.p.WaitStats()
	t.Logf("our waiters: parks %v, deaths seen %v (by %v)", ws.Parks, ws.Seen, wayNames)
	assert.NotZero(t, *w.h.Uint64(off + 32), "the executors took the lock too")
	assert.NotZero(t, *w.h.Uint64(off + 24), "the children took the lock too")
	assert.Zero(t, *w.h.Uint64(off + 8), "nobody inside")
	w.settled(t, off, 0)
}
