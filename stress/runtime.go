package stress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
)

// extName is the extension the runtime runs on the stress locks.
const extName = "stress"

// What the extension returns in r0: bits.
const (
	extBroken  = 1  // the pair, a backward link or the length disagreed (and was repaired)
	extCut     = 8  // the forward chain did not parse: the list was cut (a violation)
	extDied    = 16 // mcs_lock returned LockOwnerDied
	extNotRecv = 32 // mcs_lock returned LockNotRecoverable (a violation)
)

// extension is the bytecode the runtime's executors run with the address of
// a lock record as argument (context word 0, which the verifier's lock table
// follows). It takes the lock as the Go workers do and checks the data: the
// pair (b = a), and the list, walked along its forward chain (links are heap
// offsets: address = heap base + offset; the base is the argument masked with
// ^(heap size - 1), the heap being aligned to its size) with each object
// validated (aligned, in the pages, its magic naming this lock; at most
// ListCap+1 of them), the backward links, the sentinel's last link and the
// length rewritten where they disagree. Under LockOwnerDied that is the
// repair, followed by ConsistentCall and a count in the record's recovery
// counter; under a clean lock a disagreement is a violation (repaired too, as
// the Go workers do). Then it updates the pair: a, a loop of window rounds
// (its back-edge is a cancellation point: a cancel there leaves the pair
// torn, and the runtime passes the lock on owner-died), b. It unlocks on every
// path and returns the ext* bits.
func extension(heapSize, pagesOff uint64, listCap, window int) string {
	flag := func(bit int) string {
		// Formatted again with the text: doubled % signs.
		return fmt.Sprintf("\tldxdw %%%%r8, [%%%%r10-16]\n\tor %%%%r8, %d\n\tstxdw [%%%%r10-16], %%%%r8\n", bit)
	}
	text := fmt.Sprintf(`
	mov %%r9, %%r1
	ldxdw %%r7, [%%r9+0]
	mov %%r1, %%r7@lock
	stxdw [%%r10-8], %%r0
	mov %%r8, 0
	stxdw [%%r10-16], %%r8
	jne %%r0, %[1]d, held
	mov %%r8, %[2]d
	ja release
held:
	ldxdw %%r0, [%%r7+%[3]d]
	ldxdw %%r1, [%%r7+%[4]d]
	jeq %%r0, %%r1, pair_ok
	stxdw [%%r7+%[4]d], %%r0
`+flag(extBroken)+`pair_ok:
	lddw %%r1, %#[5]x
	and %%r1, %%r7
	mov %%r2, %%r7
	sub %%r2, %%r1
	add %%r2, %[6]d
	mov %%r3, 0
	mov %%r4, %%r2
	ldxdw %%r5, [%%r7+%[7]d]
	lddw %%r6, %#[8]x
	or %%r5, %%r6
	ldxdw %%r0, [%%r7+%[6]d]
walk:
	jeq %%r0, %%r2, walked
	jgt %%r3, %[9]d, cut
	mov %%r6, %%r0
	and %%r6, 7
	jne %%r6, 0, cut
	lddw %%r6, %#[10]x
	jlt %%r0, %%r6, cut
	lddw %%r6, %#[11]x
	jgt %%r0, %%r6, cut
	mov %%r6, %%r1
	add %%r6, %%r0
	ldxdw %%r8, [%%r6+%[12]d]
	jne %%r8, %%r5, cut
	ldxdw %%r8, [%%r6+%[13]d]
	jeq %%r8, %%r4, linked
	stxdw [%%r6+%[13]d], %%r4
`+flag(extBroken)+`linked:
	mov %%r4, %%r0
	ldxdw %%r0, [%%r6+%[14]d]
	add %%r3, 1
	ja walk
walked:
	ldxdw %%r8, [%%r7+%[15]d]
	jeq %%r8, %%r4, tail_ok
	stxdw [%%r7+%[15]d], %%r4
`+flag(extBroken)+`tail_ok:
	ldxdw %%r8, [%%r7+%[16]d]
	jeq %%r8, %%r3, checked
	stxdw [%%r7+%[16]d], %%r3
`+flag(extBroken)+`	ja checked
cut:
	stxdw [%%r7+%[6]d], %%r2
	stxdw [%%r7+%[15]d], %%r2
	mov %%r8, 0
	stxdw [%%r7+%[16]d], %%r8
`+flag(extCut)+`checked:
	ldxdw %%r0, [%%r10-8]
	jne %%r0, %[17]d, update
	mov %%r1, %%r7@consistent
	mov %%r0, 1
	lock add [%%r7+%[18]d], %%r0
`+flag(extDied)+`update:
	mov %%r0, 1
	lock add [%%r7+%[19]d], %%r0
	lock add [%%r7+%[3]d], %%r0
	mov %%r0, %[20]d
window:
	sub %%r0, 1
	jne %%r0, 0, window
	mov %%r0, 1
	lock add [%%r7+%[4]d], %%r0
	ldxdw %%r8, [%%r10-16]
release:
	mov %%r1, %%r7@unlock
	mov %%r0, %%r8
	exit
`,
		mcs.LockNotRecoverable, extNotRecv, lA, lB, ^(heapSize - 1), lNext, lIndex, uint64(objMagic),
		listCap, pagesOff, heapSize-objSize, oMagic, oPrev, oNext, lPrev, lLen,
		mcs.LockOwnerDied, lRecoveries, lAcquired, window)
	// The calls contain % signs: put in after formatting.
	return strings.NewReplacer("@lock", abi.LockCall, "@consistent", abi.ConsistentCall, "@unlock", abi.UnlockCall).Replace(text) + mcs.BytecodeLock
}

// RuntimeWorker is WorkerEnv's INDEX for the extension runtime's process
// (Config.Runtime), which the parent kills and restarts like a worker.
const RuntimeWorker = "runtime"

// runtimeMain is the runtime process's body: it opens the heap, starts a
// runtime (one JIT, one interpreting executor) whose extension takes the
// table's locks, and invokes it on random locks from one goroutine per
// executor while a canceller cancels invocations at random, until the table's
// stop word is set. What it sees is counted in the table's header (tRt*): a
// kill loses nothing but the invocations in flight. A worker's exit status
// says whether it could do its job.
func runtimeMain(path string) error {
	h, _, closeKernel, err := openWorkerHeap(path)
	if err != nil {
		return fmt.Errorf("stress runtime: %w", err)
	}
	defer closeKernel()
	defer h.Close()
	t, ok := openTable(h)
	if !ok {
		return fmt.Errorf("stress runtime: no stress table in %s", path)
	}
	if err := jit.Supported(); err != nil {
		return fmt.Errorf("stress runtime: %w", err)
	}
	if h.Base()%h.Size() != 0 {
		return fmt.Errorf("stress runtime: heap base %#x not aligned to its size", h.Base())
	}
	insns, err := bytecode.Assemble(extension(h.Size(), h.Header().PagesOff, int(t.load(t.off+tCap)), int(t.load(t.off+tRtWindow))))
	if err != nil {
		return fmt.Errorf("stress runtime: extension: %w", err)
	}
	rt, err := serve.NewWith(h, map[string]asm.Instructions{extName: insns},
		serve.Options{JIT: 1, Interpreted: 1, Budget: -1, Trace: io.Discard})
	if err != nil {
		return fmt.Errorf("stress runtime: %w", err)
	}
	defer rt.Close()
	t.store(t.off+tRtSlot, uint64(rt.Process().Slot())+1)
	go orphaned()
	stopping := make(chan struct{})
	go dumpIfStuck(stopping)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	seed := uint64(os.Getpid())
	for g := range 2 {
		rng := rand.New(rand.NewPCG(seed, 100+uint64(g)))
		wg.Go(func() { t.invoke(ctx, rt, rng) })
	}
	rng := rand.New(rand.NewPCG(seed, 200))
	for t.load(t.off+tStop) == 0 {
		time.Sleep(time.Duration(rng.Int64N(int64(2 * time.Millisecond))))
		rt.Cancel(extName)
	}
	close(stopping)
	stop()
	wg.Wait()
	// An executor out of the pool comes back once its queue passes on
	// (serve's rejoin); one still out after the liveness bound is stuck.
	for deadline := time.Now().Add(2 * time.Second); rt.Stuck() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := rt.Stuck(); n > 0 {
		t.add(t.off+tRtStuck, uint64(n))
		fmt.Fprintf(os.Stderr, "stress runtime: %d executors still out of the pool 2 s after the stop: their queue node was never passed on\n", n)
	}
	return nil
}

// dumpIfStuck writes the runtime's goroutines to stderr if it still runs
// 4 s after it saw the table's stop word (stopping closed): the parent counts
// a worker still running 7 s after the stop as stuck and kills it, and this
// says first where the runtime waits. It does not touch the heap, which the
// runtime unmaps when it ends.
func dumpIfStuck(stopping <-chan struct{}) {
	<-stopping
	time.Sleep(4 * time.Second)
	fmt.Fprintln(os.Stderr, "stress runtime: still running 4 s after the stop; its goroutines:")
	pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
}

// invoke runs the extension on random locks until ctx ends, a quarter of the
// invocations under a context of 0-1 ms, and counts what they returned.
func (t *table) invoke(ctx context.Context, rt *serve.Runtime, rng *rand.Rand) {
	for ctx.Err() == nil {
		i := rng.IntN(t.locks)
		c, done := ctx, func() {}
		if rng.IntN(4) == 0 {
			c, done = context.WithTimeout(ctx, time.Duration(rng.Int64N(int64(time.Millisecond))))
		}
		r0, err := rt.Invoke(c, extName, t.h.Base()+t.lock(i))
		done()
		switch {
		case errors.Is(err, abi.ErrCancelled):
			t.add(t.off+tRtCancellations, 1)
		case err != nil:
			t.rtViolation("extension on lock %d: %v", i, err)
		default:
			t.account(i, r0)
		}
	}
}

// account counts what one invocation returned.
func (t *table) account(i int, r0 uint64) {
	switch {
	case r0&extNotRecv != 0:
		t.rtViolation("extension on lock %d: LockNotRecoverable", i)
		return
	case r0&extCut != 0:
		t.rtViolation("extension on lock %d: the list's forward chain does not parse", i)
	case r0&extBroken != 0 && r0&extDied != 0:
		t.add(t.off+tRtRepaired, 1)
	case r0&extBroken != 0:
		t.rtViolation("extension on lock %d: data broken under a clean lock", i)
	}
	t.add(t.off+tRtAcquired, 1)
}

// rtViolation counts a violation the runtime saw and says what it was on
// stderr, which the parent's is.
func (t *table) rtViolation(format string, args ...any) {
	t.add(t.off+tRtViolations, 1)
	fmt.Fprintf(os.Stderr, "stress runtime: "+format+"\n", args...)
}

// runtimeHolds reports whether the runtime process (owner slot + 1 rt) holds
// lock l, and runtimeQueued whether one of its nodes waits in a queue.
func (r *runner) runtimeHolds(rt uint64, l int) bool {
	w := mcs.DecodeWord(r.t.load(r.t.lock(l) + lWord))
	return rt != 0 && w.Locked && uint64(w.Owner) == rt
}

func (r *runner) runtimeQueued(rt uint64) bool {
	if rt == 0 {
		return false
	}
	hdr := r.h.Header()
	for i := uint32(rt-1) * hdr.NodesPerProc; i < uint32(rt)*hdr.NodesPerProc; i++ {
		if s := r.p.QueueNode(i).State; s == mcs.NodeWaiting || s == mcs.NodeParked || s == mcs.NodeHead {
			return true
		}
	}
	return false
}

// nodesForRuntime is the nodes per process the runtime needs: an executor
// cancelled in a queue whose place it cannot leave retires its node there
// until a granter frees it, and takes a spare one meanwhile.
func nodesForRuntime(c Config) int {
	if c.Runtime {
		return 128
	}
	return 0
}
