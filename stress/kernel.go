package stress

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/mcs"
)

// With Config.Kernel the heap is a BPF arena, and every process of the run
// gets it and the two kernel lock programs as inherited descriptors, loaded
// once by the parent: restarting thousands of workers must not load
// thousands of programs (RATIONALE.md: program loads are paced).
const (
	arenaFD   = 3 // the arena map
	holdFD    = 4 // kernel.LockHold
	releaseFD = 5 // kernel.LockRelease

	// arenaPath stands for the heap's path in WorkerEnv: the heap is in the
	// arena behind arenaFD.
	arenaPath = "arena"
)

// arenaLocks is a run's arena and the kernel lock programs, as the parent
// made them or a worker inherited them.
type arenaLocks struct {
	a             *kernel.Arena
	hold, release *kernel.KernelLocker
}

// close releases the programs and the arena (after the heap's Close).
func (k *arenaLocks) close() {
	for _, l := range []*kernel.KernelLocker{k.hold, k.release} {
		if l != nil {
			l.Close()
		}
	}
	k.a.Close()
}

// kernelRun is the parent's arenaLocks (Config.Kernel), with duplicates of
// their descriptors for the workers' ExtraFiles.
type kernelRun struct {
	arenaLocks
	files []*os.File
}

// newKernelRun creates the arena, formats the heap in it and loads the lock
// programs.
func newKernelRun(size uint64, opts *heap.Options) (*kernelRun, *heap.Heap, error) {
	a, err := kernel.NewArena(size)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel executors: %w", err)
	}
	k := &kernelRun{arenaLocks: arenaLocks{a: a}}
	h, err := a.NewHeap(opts)
	if err == nil {
		k.hold, err = kernel.LoadLockProgram(a, kernel.LockHold, mcs.KernelSpinTimeout)
	}
	if err == nil {
		k.release, err = kernel.LoadLockProgram(a, kernel.LockRelease, mcs.KernelSpinTimeout)
	}
	for _, fd := range []int{a.FD(), fdOf(k.hold), fdOf(k.release)} {
		if err != nil {
			break
		}
		// A duplicate: an os.File closes its descriptor when collected.
		var nfd int
		if nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			k.files = append(k.files, os.NewFile(uintptr(nfd), "kflex-stress-kernel"))
		}
	}
	if err != nil {
		if h != nil {
			h.Close()
		}
		k.close()
		return nil, nil, fmt.Errorf("kernel executors: %w", err)
	}
	return k, h, nil
}

func fdOf(l *kernel.KernelLocker) int {
	if l == nil {
		return -1
	}
	return l.FD()
}

// close releases the descriptors' duplicates, the programs and the arena
// (after the heap's Close).
func (k *kernelRun) close() {
	for _, f := range k.files {
		f.Close()
	}
	k.arenaLocks.close()
}

// openWorkerHeap opens the run's heap in a worker: the file at path, or, for
// arenaPath, the arena and lock programs it inherited. close releases what it
// opened after the heap's own Close.
func openWorkerHeap(path string) (h *heap.Heap, k *arenaLocks, close func(), err error) {
	if path != arenaPath {
		h, err := heap.Open(path, nil)
		return h, nil, func() {}, err
	}
	a, err := kernel.OpenArena(arenaFD)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("inherited arena: %w", err)
	}
	k = &arenaLocks{a: a}
	if k.hold, err = inheritedProgram(holdFD); err == nil {
		k.release, err = inheritedProgram(releaseFD)
	}
	if err == nil {
		h, err = a.OpenHeap()
	}
	if err != nil {
		k.close()
		return nil, nil, nil, err
	}
	return h, k, k.close, nil
}

func inheritedProgram(fd int) (*kernel.KernelLocker, error) {
	p, err := ebpf.NewProgramFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("inherited lock program (fd %d): %w", fd, err)
	}
	return &kernel.KernelLocker{Program: &kernel.Program{Program: p, Type: kernel.Syscall}}, nil
}

// locker is how a worker goroutine takes and gives back a lock: *mcs.Mutex,
// or a kernelLocker.
type locker interface {
	Lock() error
	Consistent()
	Unlock()
}

// kernelLocker takes and releases one lock with the kernel form of the
// lock (mcs.KernelLock), run in the kernel by BPF_PROG_TEST_RUN on the
// calling thread, with the thread's own queue node. The kernel form's waits
// are bounded (mcs.KernelSpinTimeout) and it never takes a lock over from a
// dead holder: it times out (mcs.KernelTimedOut) and is retried, backing
// off; after kernelTries timed-out waits (or refusals of a node still
// abandoned elsewhere, mcs.KernelNodeBusy) in a row the acquisition is made
// from Go (m), the user-space retry the kernel form is designed for: a kernel
// waiter re-queued at the tail each time can starve behind a long queue of
// slow holders. Counts go to the thread record: rKernelTimeouts,
// rKernelUnstuck, rKernelFallbacks.
type kernelLocker struct {
	k     *arenaLocks
	p     *mcs.Process
	m     *mcs.Mutex // the same lock, for the fallback
	viaGo bool       // the current acquisition was made by m
	t     *table
	rec   uint64 // the thread record
	off   uint64 // the lock word's heap offset
	n     mcs.Node
	ctx   []byte
}

// kernelTries is how many timed-out kernel waits in a row make an
// acquisition fall back to Go.
const kernelTries = 4

func newKernelLocker(k *arenaLocks, p *mcs.Process, t *table, rec, off uint64, n mcs.Node) (*kernelLocker, error) {
	m, err := p.Mutex(off)
	if err != nil {
		return nil, err
	}
	h := p.Heap()
	return &kernelLocker{k: k, p: p, m: m, t: t, rec: rec, off: off, n: n, ctx: kernel.LockArgs{Lock: h.Base() + off,
		Node: n, Held: p.Held(), Base: h.Base(), Table: h.Header().NodeOff}.Context()}, nil
}

// Lock takes the lock, retrying the kernel's bounded waits. The calling
// goroutine must be locked to its thread: the node is the thread's.
func (l *kernelLocker) Lock() error {
	l.viaGo = false
	for tries := 0; ; {
		if tries == kernelTries {
			l.viaGo = true
			err := l.m.Lock()
			if err == nil || errors.Is(err, mcs.ErrOwnerDied) {
				l.t.add(l.rec+rKernelFallbacks, 1)
			}
			return err
		}
		r0, err := l.k.hold.Lock(l.ctx)
		switch {
		case err != nil:
			return fmt.Errorf("kernel lock at %#x: %w", l.off, err)
		case r0 == mcs.LockAcquired:
			return nil
		case r0 == mcs.LockNotRecoverable:
			return mcs.ErrNotRecoverable
		case r0 == mcs.KernelTimedOut || r0 == mcs.KernelNodeBusy:
			// Timed out, or the thread's node is still abandoned in a
			// queue from an earlier timeout (freed only when someone
			// passes it there). A kernel thread spinning in BPF is not
			// preempted for the user-space holder it waits for: back off,
			// more each time, so that on few CPUs the holder gets to run.
			if r0 == mcs.KernelTimedOut {
				l.t.add(l.rec+rKernelTimeouts, 1)
			}
			time.Sleep(50 * time.Microsecond << tries)
			tries++
		case r0 == mcs.KernelStuck || r0 == mcs.KernelStuckUnheld:
			// The hand-off the kernel could not finish, done from Go; the
			// lock is released and taken again from the start.
			if err := l.p.Unstick(l.off, l.n, r0); err != nil {
				return fmt.Errorf("kernel lock at %#x: %w", l.off, err)
			}
			l.t.add(l.rec+rKernelUnstuck, 1)
		default:
			return fmt.Errorf("kernel lock at %#x: r0 %d", l.off, r0)
		}
	}
}

// Consistent marks the data consistent after an owner-died result, which
// only the fallback returns.
func (l *kernelLocker) Consistent() {
	if l.viaGo {
		l.m.Consistent()
	}
}

// Unlock releases the lock with the kernel form's mcs_unlock, or from Go
// if the fallback took it.
func (l *kernelLocker) Unlock() {
	if l.viaGo {
		l.m.Unlock()
		return
	}
	if r0, err := l.k.release.Lock(l.ctx); err != nil || r0 != 0 {
		// The worker cannot go on holding a lock it could not release: the
		// parent counts its exit as unaccounted.
		fmt.Fprintf(os.Stderr, "stress worker: kernel unlock at %#x: r0 %d, %v\n", l.off, r0, err)
		os.Exit(3)
	}
}
