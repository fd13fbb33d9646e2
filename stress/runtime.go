package stress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
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

// rtRun is the runtime in the parent: its executors run the extension on
// random locks from invoker goroutines while a canceller cancels them.
type rtRun struct {
	rt   *serve.Runtime
	objs map[uint64]bool // its allocations (executor stacks, rseq areas)
	live uint64          // and how many the allocator counts

	ctx           context.Context // ends at the stop, also for an invoker waiting for an executor
	stop          context.CancelFunc
	wg            sync.WaitGroup
	acquisitions  atomic.Uint64
	repaired      atomic.Int64
	violations    atomic.Int64
	cancellations atomic.Int64
	mu            sync.Mutex
	problems      []string
}

// startRuntime creates the runtime (one JIT, one interpreting executor) on
// the run's heap; r.p becomes its process.
func (r *runner) startRuntime() error {
	if err := jit.Supported(); err != nil {
		return fmt.Errorf("stress: runtime: %w", err)
	}
	h, c := r.h, r.cfg
	if h.Base()%h.Size() != 0 {
		return fmt.Errorf("stress: runtime: heap base %#x not aligned to its size", h.Base())
	}
	insns, err := bytecode.Assemble(extension(h.Size(), h.Header().PagesOff, c.ListCap, c.RuntimeWindow))
	if err != nil {
		return fmt.Errorf("stress: extension: %w", err)
	}
	before := allocated(r)
	liveBefore := h.Stats().LiveObjects
	rt, err := serve.NewWith(h, map[string]asm.Instructions{extName: insns},
		serve.Options{JIT: 1, Interpreted: 1, Budget: -1, Trace: io.Discard})
	if err != nil {
		return fmt.Errorf("stress: runtime: %w", err)
	}
	x := &rtRun{rt: rt, objs: map[uint64]bool{}, live: h.Stats().LiveObjects - liveBefore}
	x.ctx, x.stop = context.WithCancel(context.Background())
	for off := range allocated(r) {
		if !before[off] {
			x.objs[off] = true
		}
	}
	r.rt, r.p = x, rt.Process()
	return nil
}

// allocated is the set of allocated small objects (the allocator's bitmap).
func allocated(r *runner) map[uint64]bool {
	hdr := r.h.Header()
	set := map[uint64]bool{}
	for w := hdr.ObjBitsOff; w < hdr.FreeBitsOff; w += 8 {
		v := atomic.LoadUint64(r.h.Uint64(w))
		for v != 0 {
			b := uint64(bits.TrailingZeros64(v))
			v &= v - 1
			if off := ((w-hdr.ObjBitsOff)*8 + b) * 8; off >= hdr.PagesOff {
				set[off] = true
			}
		}
	}
	return set
}

func (x *rtRun) problem(format string, args ...any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.problems) < 10 {
		x.problems = append(x.problems, fmt.Sprintf(format, args...))
	}
}

// run starts the invokers (one per executor) and the canceller, each with
// its own stream of the seed: invocations on random locks, a quarter of them
// under a context of 0-1 ms; Runtime.Cancel at random moments 0-2 ms apart.
func (r *runner) runRuntime() {
	x, t, seed := r.rt, r.t, r.cfg.Seed
	for g := range 2 {
		rng := rand.New(rand.NewPCG(seed, 100+uint64(g)))
		x.wg.Go(func() {
			for {
				select {
				case <-x.ctx.Done():
					return
				default:
				}
				i := rng.IntN(t.locks)
				ctx, done := x.ctx, func() {}
				if rng.IntN(4) == 0 {
					ctx, done = context.WithTimeout(ctx, time.Duration(rng.Int64N(int64(time.Millisecond))))
				}
				r0, err := x.rt.Invoke(ctx, extName, r.h.Base()+t.lock(i))
				done()
				if err != nil {
					if errors.Is(err, abi.ErrCancelled) {
						x.cancellations.Add(1)
					} else {
						x.violations.Add(1)
						x.problem("extension on lock %d: %v", i, err)
					}
					continue
				}
				x.account(i, r0)
			}
		})
	}
	rng := rand.New(rand.NewPCG(seed, 200))
	x.wg.Go(func() {
		for {
			select {
			case <-x.ctx.Done():
				return
			case <-time.After(time.Duration(rng.Int64N(int64(2 * time.Millisecond)))):
				x.rt.Cancel(extName)
			}
		}
	})
}

// account counts what one invocation returned.
func (x *rtRun) account(i int, r0 uint64) {
	switch {
	case r0&extNotRecv != 0:
		x.violations.Add(1)
		x.problem("extension on lock %d: LockNotRecoverable", i)
		return
	case r0&extCut != 0:
		x.violations.Add(1)
		x.problem("extension on lock %d: the list's forward chain does not parse", i)
	case r0&extBroken != 0 && r0&extDied != 0:
		x.repaired.Add(1)
	case r0&extBroken != 0:
		x.violations.Add(1)
		x.problem("extension on lock %d: data broken under a clean lock", i)
	}
	x.acquisitions.Add(1)
}

// stopRuntime stops the invokers and the canceller: a last Runtime.Cancel
// ends an invocation that waits; one still running after the liveness bound
// is stuck.
func (r *runner) stopRuntime() {
	x := r.rt
	x.stop()
	defer func() {
		if n := x.rt.Stuck(); n > 0 {
			r.rep.Stuck += n
			r.problem("%d of the runtime's executors left its pool: cancelled in a queue, their node stayed abandoned with no spare left", n)
		}
	}()
	done := make(chan struct{})
	go func() { x.wg.Wait(); close(done) }()
	deadline := time.After(r.cfg.MaxWait)
	for {
		select {
		case <-done:
			return
		case <-deadline:
			r.rep.Stuck++
			r.problem("the runtime's invocations still run %v after the stop: %v", r.cfg.MaxWait, x.rt.Running())
			x.rt.Cancel("")
			<-done
			return
		case <-time.After(10 * time.Millisecond):
			x.rt.Cancel(extName)
		}
	}
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
