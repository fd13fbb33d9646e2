package stress

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/userspace"
)

// WorkerEnv names the environment variable that makes a process a worker:
// "HEAPPATH,INDEX", INDEX RuntimeWorker for the extension runtime's process. Config.Command's process must call WorkerMain when it is
// set (IsWorker).
const WorkerEnv = "KFLEX_STRESS_WORKER"

// IsWorker reports whether this process was started by Run as a worker.
func IsWorker() bool { return os.Getenv(WorkerEnv) != "" }

// WorkerMain is a worker's body: it attaches to the heap named in WorkerEnv,
// runs the table's Threads goroutines until the table's stop word is set, and
// detaches. Broken invariants are counted in the heap, not returned: an error
// means the worker could not do its job (the parent reports the exit status).
// A worker whose parent dies exits.
func WorkerMain() error {
	spec := os.Getenv(WorkerEnv)
	path, idx, ok := strings.Cut(spec, ",")
	if ok && idx == RuntimeWorker {
		return runtimeMain(path)
	}
	proc, err := strconv.Atoi(idx)
	if !ok || err != nil {
		return fmt.Errorf("stress worker: %s=%q: want PATH,INDEX", WorkerEnv, spec)
	}
	raw, k, closeKernel, err := openWorkerHeap(path)
	if err != nil {
		return fmt.Errorf("stress worker: %w", err)
	}
	defer closeKernel()
	uh, err := userspace.AttachHeap(raw)
	if err != nil {
		return fmt.Errorf("stress worker: %w", err)
	}
	defer uh.Close()
	t, ok := openTable(uh.Raw())
	if !ok || proc < 0 || proc >= t.procs {
		return fmt.Errorf("stress worker %d: no stress table in %s", proc, path)
	}
	if t.load(t.off+tKernel) != 0 && k == nil {
		return fmt.Errorf("stress worker %d: the run has kernel executors, but the heap %s is not in a BPF arena", proc, path)
	}
	// The parent may aim a kill at this process as it dies at its fault
	// point: the mark tells the parent the death was the fault's, and
	// everything it reads of this process may be from before it.
	mcs.OnFault(func() { t.store(t.thread(proc, 0)+rFaulted, 1) })
	go orphaned()
	var wg sync.WaitGroup
	errs := make([]error, t.threads)
	for th := range t.threads {
		wg.Go(func() {
			if th == 0 && t.load(t.off+tKernel) != 0 {
				errs[th] = t.kernelWork(uh, k, proc)
				return
			}
			errs[th] = t.work(uh, proc, th, nil)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// orphaned exits the process when its parent is gone: a worker must not
// outlive the run.
func orphaned() {
	parent := os.Getppid()
	for {
		time.Sleep(50 * time.Millisecond)
		if os.Getppid() != parent {
			os.Exit(4)
		}
	}
}

// kernelWork is goroutine 0 of a worker with kernel executors: work, taking
// and releasing the locks with the kernel form of the lock on this thread.
func (t *table) kernelWork(uh *userspace.Heap, k *arenaLocks, proc int) error {
	runtime.LockOSThread() // the queue node is this thread's
	defer runtime.UnlockOSThread()
	p := uh.Process()
	n := p.TakeNode()
	defer func() {
		// A node left abandoned in a queue (a timeout just before the
		// stop) is freed by whoever passes it, or by Reap once this
		// process is gone: only a free node goes back.
		if p.QueueNode(n.Index).State == 0 {
			p.GiveNode(n)
		}
	}()
	lockers := make([]locker, t.locks)
	for i := range lockers {
		l, err := newKernelLocker(k, p, t, t.thread(proc, 0), t.lock(i)+lWord, n)
		if err != nil {
			return err
		}
		lockers[i] = l
	}
	return t.work(uh, proc, 0, lockers)
}

// work is one worker goroutine: over and over, maybe allocate an object, take
// a random lock, check (or repair) its data, update the pair, insert the object
// or remove one, unlock, free what it removed. lockers, if not nil, take the
// locks instead of the Go lock (kernelWork).
func (t *table) work(uh *userspace.Heap, proc, th int, lockers []locker) error {
	h, p := uh.Raw(), uh.Process()
	rec := t.thread(proc, th)
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(th)))
	if lockers == nil {
		lockers = make([]locker, t.locks)
		for i := range lockers {
			m, err := p.Mutex(t.lock(i) + lWord)
			if err != nil {
				return err
			}
			lockers[i] = m
		}
	}
	plant, window, limit := t.load(t.off+tPlant), int(t.load(t.off+tWindow)), t.load(t.off+tCap)
	var objs []uint64
	for t.load(t.off+tStop) == 0 {
		t.add(rec+rOps, 1)
		i := rng.IntN(t.locks)
		lr := t.lock(i)
		if plant == plantNoLock && rng.IntN(4) == 0 {
			t.add(lr+lA, 1) // the bug: no lock taken
			t.spin(window, rng)
			t.add(lr+lB, 1)
			continue
		}
		insert := rng.IntN(2) == 0
		var x uint64
		if insert {
			t.store(rec+rHold, holdPending)
			t.store(rec+rState, stAllocator)
			off, err := h.Alloc(objSizes[rng.IntN(len(objSizes))])
			if err != nil {
				return fmt.Errorf("stress worker %d/%d: alloc: %w", proc, th, err)
			}
			t.store(rec+rHold, off)
			t.store(rec+rState, stIdle)
			x = off
			t.store(x+oMagic, 0)
		}
		m := lockers[i]
		start := now()
		t.store(rec+rWaitSince, start)
		t.store(rec+rState, stWaiting)
		err := m.Lock()
		waited := now() - start
		t.store(rec+rWaitSince, 0)
		if waited > t.load(rec+rMaxWait) {
			t.store(rec+rMaxWait, waited)
		}
		switch {
		case errors.Is(err, mcs.ErrOwnerDied):
			t.store(rec+rHeldLock, uint64(i)+1)
			t.store(rec+rState, stHolding)
			t.store(lr+lRecoveredAt, now())
			t.add(lr+lRecoveries, 1)
			broken, o, cerr := t.inspect(i, objs[:0])
			objs = o
			if cerr != nil {
				t.add(rec+rViolation, 1)
				fmt.Fprintf(os.Stderr, "stress worker %d/%d: %v\n", proc, th, cerr)
			} else if broken {
				t.add(rec+rRepaired, 1)
			}
			if plant != plantNoRepair || cerr != nil {
				t.repair(i, cerr == nil)
			}
			m.Consistent()
		case errors.Is(err, mcs.ErrNotRecoverable):
			t.add(rec+rViolation, 1)
			fmt.Fprintf(os.Stderr, "stress worker %d/%d: lock %d: %v\n", proc, th, i, err)
			t.store(rec+rState, stIdle)
			if insert {
				t.free(h, rec, x)
			}
			continue
		case err != nil:
			return fmt.Errorf("stress worker %d/%d: lock %d: %w", proc, th, i, err)
		default:
			t.store(rec+rHeldLock, uint64(i)+1)
			t.store(rec+rState, stHolding)
			broken, o, cerr := t.inspect(i, objs[:0])
			objs = o
			if cerr != nil || broken {
				t.add(rec+rViolation, 1)
				t.repair(i, cerr == nil)
			}
		}
		t.add(rec+rAcquired, 1)
		t.add(lr+lAcquired, 1)
		t.add(lr+lA, 1)
		t.spin(window, rng)
		t.add(lr+lB, 1)
		var out uint64
		switch {
		case insert && t.load(lr+lLen) < limit:
			t.insert(i, x)
			t.store(rec+rHold, 0)
		case insert:
			out = x // full: free it
		case t.load(lr+lLen) > 0:
			out = t.removeFirst(i, rec+rHold)
		}
		t.store(rec+rHeldLock, 0)
		t.store(rec+rState, stIdle)
		m.Unlock()
		if out != 0 {
			if err := t.free(h, rec, out); err != nil {
				return fmt.Errorf("stress worker %d/%d: %w", proc, th, err)
			}
		}
	}
	return nil
}

// objSizes are the sizes of list objects: several size classes, so that
// refills, flushes and slab carving (under the page lock) all happen, and
// are killed in.
var objSizes = []uint64{objSize, 48, 96, 256, 1024, 3072}

// free frees x, named by the thread's hold word, and clears the hold.
func (t *table) free(h interface{ Free(uint64) error }, rec, x uint64) error {
	t.store(x+oMagic, 0)
	t.store(rec+rState, stAllocator)
	err := h.Free(x)
	t.store(rec+rHold, 0)
	t.store(rec+rState, stIdle)
	if err != nil {
		return fmt.Errorf("free %#x: %w", x, err)
	}
	return nil
}

// spin is the moment between the pair's two increments: a busy wait of n
// polls, and now and then a yield, so that holders are preempted and waiters
// queue behind them.
func (t *table) spin(n int, rng *rand.Rand) {
	w := t.word(t.off + tStop)
	for range n {
		atomic.LoadUint64(w)
	}
	if rng.IntN(16) == 0 {
		runtime.Gosched()
	}
}
