// Package serve is kflex's extension runtime: a process that owns a heap, loads
// extension programs, verifies and compiles them through loader's pipeline
// (guards stay only on accesses the verifier cannot place in the stack or the
// context) and runs them on a pool of executors for the processes attached to
// it over a unix socket (the protocol is package internal/sys/wire;
// userspace.Dial is the client side). Programs come as bytecode or in ELF
// objects (Options.Objects: C extensions), whose globals the runtime places
// in the heap and which applications find by name (globals.go).
//
// An operator sees what it does through a *slog.Logger (Options.Logger:
// processes attaching, detaching and dying, cancellations, failures, locks
// taken over from dead holders) and, with Options.Metrics, Prometheus
// metrics (metrics.go: invocations, errors and run times per program,
// cancellations by cause, lock waits, owner-died recoveries, the heap's
// allocator, executors and processes). Status, and OpStatus on the socket
// (kflex status), list the programs and the connected processes.
//
// Layer 6 (serve, kernel): the runtime, above the engines and the lock; only
// the harnesses and the commands import it.
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/sys/wire"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/object"
	"github.com/kflex-go/kflex/rseq"
	"github.com/kflex-go/kflex/verifier"
)

// Helpers every extension may call, by number (abi's).
const (
	HelperAlloc = abi.HelperAlloc
	HelperFree  = abi.HelperFree
	HelperTime  = abi.HelperTime
	HelperCPU   = abi.HelperCPU
	HelperTrace = abi.HelperTrace
	HelperWake  = abi.HelperWake
)

// Runtime runs extensions on a heap it is attached to.
type Runtime struct {
	h        *heap.Heap
	proc     *mcs.Process
	progs    map[string]*jit.Program
	iprogs   map[string]*interp.Program  // for interpreting executors
	verified map[string]*verifier.Result // each program's analysis: its cancellation tables
	stats    map[string]*progStats       // every program's counters (stats.go)
	execs    chan *executor
	all      []*executor
	nexec    int // executors the pool has (len(all) once New returns, until Close)
	trace    io.Writer
	traceMu  sync.Mutex
	log      *slog.Logger
	counts   counters
	metrics  *metrics // nil without Options.Metrics

	mu      sync.Mutex
	conns   map[net.Conn]peer
	closing bool     // Close has begun: no new event sources
	stops   []func() // stop the event sources (timers, UDP sockets)
	wg      sync.WaitGroup
	yields  atomic.Uint64
	stuck   atomic.Int64  // executors out of the pool (Stuck)
	shareFD int           // what attached processes map the heap from
	kind    wire.HeapKind // and what it is

	defaultBudget time.Duration
	budgets       map[string]time.Duration
	running       map[*running]struct{} // under mu
	closed        chan struct{}         // closed when Close begins
	inflight      sync.WaitGroup        // Invoke calls, which Close waits for

	// The C extensions' global variables, by name, and the heap objects
	// holding them, which Close frees (globals.go).
	globals      map[string]global
	globalAllocs []uint64
}

// executor is one JIT machine with its own stack in the heap, its queue node
// for the bytecode lock, and room in the heap for an rseq area. An invocation
// binds it to the calling goroutine's OS thread: the thread registers the area,
// and the node points at its slice-request byte, so that the bytecode lock asks
// the scheduler not to preempt the thread while an extension holds a heap lock.
// Where the kernel offers no slice extension, the thread registers a private
// area instead, out of the extensions' reach (rseqarea.go).
type executor struct {
	m       *jit.Machine
	im      *interp.Machine // instead of m: an interpreting executor
	node    mcs.Node
	scratch uint64
	area    uint64         // heap offset of the rseq area
	private unsafe.Pointer // the rseq area outside the heap, where it is there (rseqarea.go)
	th      *rseq.Thread
	status  rseq.Status // of the last binding

	// What the running invocation allocated and has not freed (heap
	// offsets), the check against which a cancelled invocation's
	// allocations, read from its frames, are freed.
	allocs map[uint64]struct{}
	// Nodes this executor left in a queue when cancelled: a stand-in waits
	// in each (mcs.Process.Leave) and frees it once it has handed the head
	// position on, and then they go back to the process.
	busy []mcs.Node
	// stuck: its node stayed in a queue and no spare was free (reclaim); it
	// is out of the pool until rejoin finds a free node for it.
	stuck bool

	prog *progStats // the program it runs, or ran last
	wait lockWait   // with metrics: the lock wait in progress (metrics.go)
}

// New attaches a runtime to h, compiles progs (name → program) and prepares
// threads JIT executors. Trace output from HelperTrace goes to trace.
func New(h *heap.Heap, progs map[string]asm.Instructions, threads int, trace io.Writer) (*Runtime, error) {
	return NewWith(h, progs, Options{JIT: threads, Trace: trace})
}

// Options size a Runtime.
type Options struct {
	JIT         int       // executors running compiled code
	Interpreted int       // executors running the interpreter (the JIT's oracle)
	Trace       io.Writer // HelperTrace's output (nil: discarded)
	// ArenaFD, for a heap in a BPF arena (kernel.Arena.NewHeap), is the
	// arena map's descriptor: attached processes map the heap from it. Zero
	// for a heap file or memfd, whose own descriptor is sent.
	ArenaFD int
	// Budget is how long one invocation may run before it is cancelled
	// (0: DefaultBudget; negative: no budget). Budgets overrides it per
	// program.
	Budget  time.Duration
	Budgets map[string]time.Duration
	// Logger receives the runtime's log (nil: discarded): Info for processes
	// attaching and detaching and for cancellations, Warn for deaths
	// noticed, budgets run out and failed invocations, Error for what the
	// runtime could not do.
	Logger *slog.Logger
	// Metrics, if not nil, is where the runtime registers its Prometheus
	// metrics (metrics.go); without it, the invocation path measures no
	// time.
	Metrics prometheus.Registerer
	// Objects are ELF objects (object.Read; object.Object.Select keeps
	// some of their programs) whose programs run beside progs, under their
	// function names. Their globals are allocated in the heap and
	// initialised before their programs are linked (globals.go).
	Objects []*object.Object
}

// NewWith is New with every option.
func NewWith(h *heap.Heap, progs map[string]asm.Instructions, o Options) (*Runtime, error) {
	n := o.JIT + o.Interpreted
	if n < 1 || o.JIT < 0 || o.Interpreted < 0 {
		return nil, fmt.Errorf("serve: %d JIT and %d interpreting executors", o.JIT, o.Interpreted)
	}
	if o.Trace == nil {
		o.Trace = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	proc, err := mcs.Attach(h)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{h: h, proc: proc, progs: map[string]*jit.Program{}, iprogs: map[string]*interp.Program{}, verified: map[string]*verifier.Result{},
		stats: map[string]*progStats{}, execs: make(chan *executor, n), nexec: n, trace: o.Trace, log: o.Logger, conns: map[net.Conn]peer{}, shareFD: h.Fd(), kind: wire.HeapFile,
		defaultBudget: o.Budget, budgets: o.Budgets, running: map[*running]struct{}{}, closed: make(chan struct{}),
		globals: map[string]global{}}
	switch {
	case o.Budget == 0:
		rt.defaultBudget = DefaultBudget
	case o.Budget < 0:
		rt.defaultBudget = 0
	}
	if o.ArenaFD > 0 {
		rt.shareFD, rt.kind = o.ArenaFD, wire.HeapArena
	}
	all := map[string]asm.Instructions{}
	maps.Copy(all, progs)
	progs = all
	if err := rt.loadObjects(o.Objects, progs); err != nil {
		rt.Close()
		return nil, err
	}
	for name, insns := range progs {
		if len(name) > wire.MaxNameLen {
			rt.Close()
			return nil, fmt.Errorf("serve: program %s: a name of %d bytes, which no client could invoke: at most %d", name, len(name), wire.MaxNameLen)
		}
		p, err := loader.Load(insns, loader.Options{JIT: o.JIT > 0, Interp: o.Interpreted > 0})
		if err != nil {
			rt.Close()
			return nil, fmt.Errorf("serve: program %s: %w", name, err)
		}
		rt.verified[name] = p.Verified
		if p.JIT != nil {
			rt.progs[name] = p.JIT
		}
		if p.Interp != nil {
			rt.iprogs[name] = p.Interp
		}
		rt.stats[name] = &progStats{name: name}
	}
	if err := rt.checkBudgets(); err != nil {
		rt.Close()
		return nil, err
	}
	if o.Metrics != nil {
		if err := rt.registerMetrics(o.Metrics); err != nil {
			rt.Close()
			return nil, err
		}
	}
	for i := range n {
		e, err := rt.newExecutor(i >= o.JIT)
		if err != nil {
			rt.Close()
			return nil, err
		}
		rt.all = append(rt.all, e)
		rt.execs <- e
	}
	return rt, nil
}

func (rt *Runtime) newExecutor(interpreted bool) (*executor, error) {
	private, err := privateRseq()
	if err != nil {
		return nil, err
	}
	e, err := rt.newEngine(interpreted)
	if err != nil {
		freePrivateRseq(private)
		return nil, err
	}
	e.private = private
	return e, nil
}

func (rt *Runtime) newEngine(interpreted bool) (*executor, error) {
	h := rt.h
	if interpreted {
		area, err := h.AllocOwned(rseq.AreaSize)
		if err != nil {
			return nil, fmt.Errorf("serve: executor rseq area: %w", err)
		}
		im := interp.NewMachine()
		im.AttachHeap(h.At(0), h.Size(), h.CanonBase())
		e := &executor{im: im, node: rt.proc.TakeNode(), area: area, allocs: map[uint64]struct{}{}}
		im.Helpers = rt.helpers(e)
		return e, nil
	}
	scratch, err := h.AllocOwned(jit.ScratchSize)
	if err != nil {
		return nil, fmt.Errorf("serve: executor stack: %w", err)
	}
	area, err := h.AllocOwned(rseq.AreaSize)
	if err != nil {
		h.FreeOwned(scratch)
		return nil, fmt.Errorf("serve: executor rseq area: %w", err)
	}
	m, err := jit.NewMachineIn(jit.Region{Base: h.At(0), Size: h.Size(), Canon: h.CanonBase(), Scratch: scratch})
	if err != nil {
		h.FreeOwned(scratch)
		h.FreeOwned(area)
		return nil, err
	}
	e := &executor{m: m, node: rt.proc.TakeNode(), scratch: scratch, area: area, allocs: map[uint64]struct{}{}}
	m.Helpers = rt.helpers(e)
	return e, nil
}

// bind locks the calling goroutine to its thread and registers the thread's
// rseq area: the one in the heap, or its private one (rseqarea.go). The node
// points at the slice-request byte of the heap's either way, which the
// bytecode lock writes; without the slice extension no kernel reads it.
func (e *executor) bind(h *heap.Heap) {
	runtime.LockOSThread()
	area := h.At(e.area)
	clear(h.Bytes(e.area, rseq.AreaSize))
	if e.private != nil {
		area = e.private
		clear(unsafe.Slice((*byte)(area), rseq.AreaSize))
	}
	e.th = rseq.RegisterAt(area)
	e.status = e.th.Status()
	if req := e.th.RequestByte(); req != 0 {
		*h.Uint64(e.node.Off + mcs.NodeSliceReq) = h.Base() + e.area + uint64(req-uintptr(area))
	}
}

func (e *executor) unbind(h *heap.Heap) {
	*h.Uint64(e.node.Off + mcs.NodeSliceReq) = 0
	e.th.Unregister()
	runtime.UnlockOSThread()
}

// acquire takes a free executor and binds it to the calling goroutine. It
// gives up when ctx ends or the runtime closes: a caller waiting for an
// executor is cancelled as a running one would be.
func (rt *Runtime) acquire(ctx context.Context, hook *callHook) (*executor, cancel.Cause) {
	select {
	case e := <-rt.execs:
		e.bind(rt.h)
		return e, cancel.None
	default:
	}
	select {
	case e := <-rt.execs:
		e.bind(rt.h)
		return e, cancel.None
	case <-ctx.Done():
		return nil, cancel.Context
	case <-hook.firedChan():
		return nil, hook.cause()
	case <-rt.closed:
		return nil, cancel.Shutdown
	}
}

func (rt *Runtime) release(e *executor) {
	e.unbind(rt.h)
	if !e.stuck {
		rt.execs <- e
		return
	}
	// Out of the pool until its node is free again. The invocation that
	// releases e is still counted in inflight, so Close waits for this too.
	rt.inflight.Add(1)
	go rt.rejoin(e)
}

// helpers are executor e's helpers.
func (rt *Runtime) helpers(e *executor) map[int32]interp.Helper {
	hs := rt.baseHelpers(e)
	if mcs.FaultInjection { // kflexfault builds: the bytecode lock's fault points
		hs[abi.HelperFault] = func(_ interp.Memory, id, _, _, _, _ uint64) (uint64, error) {
			mcs.FaultHelper(id)
			return 0, nil
		}
	}
	if rt.metrics != nil {
		rt.metrics.watchWaits(rt, e, hs)
	}
	return hs
}

func (rt *Runtime) baseHelpers(e *executor) map[int32]interp.Helper {
	h := rt.h
	return map[int32]interp.Helper{
		HelperAlloc: func(_ interp.Memory, size, _, _, _, _ uint64) (uint64, error) {
			off, err := h.Alloc(size)
			if err != nil {
				return 0, nil // the extension sees NULL and handles it
			}
			e.allocs[off] = struct{}{}
			return h.Base() + off, nil
		},
		HelperFree: func(_ interp.Memory, p, _, _, _, _ uint64) (uint64, error) {
			// The runtime's own objects (globals, executor stacks and rseq
			// areas) are not the extension's to free.
			if off := p & h.Mask(); h.Owned(off) || h.Free(off) != nil {
				return 1, nil
			}
			delete(e.allocs, p&h.Mask())
			return 0, nil
		},
		HelperTime: func(interp.Memory, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			return uint64(time.Since(start).Nanoseconds()), nil
		},
		HelperCPU: func(interp.Memory, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			var cpu uint32
			unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafePointer(&cpu)), 0, 0)
			return uint64(cpu), nil
		},
		HelperTrace: func(_ interp.Memory, v, _, _, _, _ uint64) (uint64, error) {
			rt.tracef("trace: %#x\n", v)
			return 0, nil
		},
		HelperWake: func(_ interp.Memory, addr, _, _, _, _ uint64) (uint64, error) {
			return 0, mcs.WakeHelper(addr)
		},
		abi.HelperRelax: func(interp.Memory, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			runtime.Gosched()
			return 0, nil
		},
		abi.HelperLockCheck: func(_ interp.Memory, lock, node, idx, held, _ uint64) (uint64, error) {
			// held 0 is the holder's call (mcs_lock_next: it holds the lock
			// and waits for its successor to link): it is not stopped there,
			// where the verifier's table cannot name the lock it holds, but at
			// the program's next cancellation point, where it does.
			if held != 0 && e.cancelled() {
				// The lock's subprograms are shielded from cancels (loader.Shielded):
				// a waiter leaves here, out of the queue, and stops the program.
				if !rt.proc.Leave(lock, idx) {
					rt.retireNode(e)
				}
				return 0, fmt.Errorf("waiting for a lock: %w", abi.ErrCancelled)
			}
			r0 := rt.proc.LockCheck(lock, node, idx, held)
			if int64(r0) == mcs.LockOwnerDied {
				rt.counts.recoveries.Add(1)
				rt.log.Warn("lock taken over from a dead holder", "program", e.prog.name, "lock", fmt.Sprintf("%#x", lock&h.Mask()))
			}
			return r0, nil
		},
		abi.HelperSliceYield: func(interp.Memory, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			rt.yields.Add(1)
			rseq.Yield()
			return 0, nil
		},
	}
}

var start = time.Now()

// The context an extension gets in r1 (r2 = its length) has abi's layout
// (abi.Context). r3 holds the argument as an address in the heap (masked into
// it by the engine): an extension that takes a pointer argument uses r3, whose
// accesses need no guard within reach of the guard regions, rather than
// loading the word and having it sanitized.

// LockCall and UnlockCall are the bytecode an extension uses to call the
// bytecode lock (mcs.BytecodeLock, appended to its program) on the lock whose
// address is in r1, with the runtime context kept in r9 (abi.LockCall). They
// clobber r0-r5.
var (
	LockCall   = abi.LockCall
	UnlockCall = abi.UnlockCall
)

// ErrNoProgram is matched (errors.Is) by the error of an invocation, timer or
// UDP socket naming a program the runtime does not have. It is
// userspace.ErrNoSuchProgram, which a client's invocation of such a program
// matches too.
var ErrNoProgram = wire.ErrNoProgram

// noProgram is the error for a program the runtime does not have.
type noProgram string

func (n noProgram) Error() string        { return fmt.Sprintf("no program %q", string(n)) }
func (n noProgram) Is(target error) bool { return target == ErrNoProgram }

// Invoke runs program name on a free executor with arg in its context and
// returns r0. It is cancelled (an error wrapping abi.ErrCancelled, a
// *cancel.Error naming the instruction and the cause) when ctx ends, when the
// program's time budget runs out, on Cancel, and when the runtime closes. A
// name the runtime does not know is an error matching ErrNoProgram.
//
// The executor is bound to the calling thread for the call only: a goroutine
// locked to its thread while it waits for the next request would need that
// very thread woken for it, which costs tens of microseconds here.
func (rt *Runtime) Invoke(ctx context.Context, name string, arg uint64) (uint64, error) {
	return rt.InvokeData(ctx, name, arg, 0)
}

// InvokeData is Invoke for an argument that addresses dataLen bytes of data
// in the heap (the context's data_len, abi.CtxDataLen), as ServeUDP passes a
// datagram.
func (rt *Runtime) InvokeData(ctx context.Context, name string, arg, dataLen uint64) (uint64, error) {
	return rt.invokeHooked(ctx, name, arg, dataLen, nil)
}

// invokeHooked is InvokeData with hook (may be nil), through which the
// connection that asked for the call cancels it.
func (rt *Runtime) invokeHooked(ctx context.Context, name string, arg, dataLen uint64, hook *callHook) (uint64, error) {
	ps := rt.stats[name]
	if ps == nil {
		rt.log.Debug("invocation of an unknown program", "program", name)
		return 0, noProgram(name)
	}
	r0, err := rt.run(ctx, ps, arg, dataLen, hook)
	ps.invocations.Add(1)
	if err != nil {
		rt.failed(ps, err)
	}
	return r0, err
}

// run is invokeHooked for program ps.
func (rt *Runtime) run(ctx context.Context, ps *progStats, arg, dataLen uint64, hook *callHook) (uint64, error) {
	name := ps.name
	rt.mu.Lock()
	if rt.closing {
		rt.mu.Unlock()
		return 0, &cancel.Error{Program: name, Insn: -1, Cause: cancel.Shutdown, Err: abi.ErrCancelled}
	}
	rt.inflight.Add(1)
	rt.mu.Unlock()
	defer rt.inflight.Done()
	e, why := rt.acquire(ctx, hook)
	if e == nil {
		return 0, &cancel.Error{Program: name, Insn: -1, Cause: why, Err: abi.ErrCancelled}
	}
	defer rt.release(e)
	e.clearCancel()
	e.prog = ps
	r := rt.watch(ctx, e, name)
	e.setDeadline(r.watch.Deadline())
	hook.attach(r.watch)
	var r0 uint64
	var err error
	if rt.metrics != nil {
		r0, err = rt.metrics.timed(rt, e, r.watch.Started(), arg, dataLen)
	} else {
		r0, err = rt.invoke(e, name, arg, dataLen)
	}
	hook.attach(nil)
	rt.restoreHeader("program", name)
	var rerr error
	if errors.Is(err, abi.ErrCancelled) {
		if rerr = rt.releaseHeld(e, name, err); rerr != nil {
			rt.log.Error("releasing what a cancelled invocation held", "program", name, "err", rerr)
		}
	}
	// What a run that ended keeps allocated is published (returned or stored
	// in the heap): no longer this invocation's.
	clear(e.allocs)
	if !rt.reclaim(e) {
		e.stuck = true
		rt.stuck.Add(1)
		rt.log.Warn("an executor leaves the pool until its queue node is passed on: it is still in the queue of a lock nobody passes on, and no spare is free", "node", e.node.Index)
	}
	err = rt.unwatch(r, err)
	if rerr != nil { // after unwatch, whose *cancel.Error says only where and why it stopped
		err = fmt.Errorf("%w (releasing what it held: %v)", err, rerr)
	}
	return r0, err
}

// restoreHeader puts the heap's header back if something overwrote it (a
// store through a NULL pointer: heap.RestoreHeader), so that processes can
// still attach, and says who it suspects (the program that just ran, or
// the process about to attach: its predecessors wrote the heap too).
func (rt *Runtime) restoreHeader(suspect ...any) {
	if rt.h.RestoreHeader() {
		rt.log.Warn("the heap's header was overwritten (a store through a NULL or wild pointer?): restored", suspect...)
	}
}

func (rt *Runtime) invoke(e *executor, name string, arg, dataLen uint64) (uint64, error) {
	p, ip := rt.progs[name], rt.iprogs[name]
	hb := rt.h.Base()
	ctx := abi.Context{Arg: arg, Node: hb + e.node.Off, NodeIndex: uint64(e.node.Index) + 1,
		Held: rt.proc.Held(), NodeTable: hb + rt.h.Header().NodeOff, DataLen: dataLen}.Bytes()
	if e.im != nil {
		return e.im.Run(ip, ctx)
	}
	return e.m.Run(p, ctx)
}

// SliceStatus is what an executor thread gets from rseq: whether the bytecode
// lock's time-slice requests can reach the kernel.
func (rt *Runtime) SliceStatus() rseq.Status {
	e, _ := rt.acquire(context.Background(), nil)
	if e == nil {
		return rseq.Status(0)
	}
	defer rt.release(e)
	return e.status
}

// Stuck is how many executors are out of the pool: cancelled in a lock's
// queue, their node stayed there, the head position did not come to it to be
// handed on, and no spare node was left (reclaim); each comes back once one
// is free (rejoin).
func (rt *Runtime) Stuck() int { return int(rt.stuck.Load()) }

// SliceYields counts how often extensions gave back an extended time slice.
func (rt *Runtime) SliceYields() uint64 { return rt.yields.Load() }

// Process is the runtime's owner-table membership in its heap: Go code of this
// process takes the heap's locks through it, alongside the extensions.
func (rt *Runtime) Process() *mcs.Process { return rt.proc }

// Serve accepts attached processes on ln until it is closed.
func (rt *Runtime) Serve(ln *net.UnixListener) error {
	if rt.shareFD < 0 {
		return fmt.Errorf("serve: heap %s has no descriptor to give attached processes (a heap in an arena needs Options.ArenaFD)", rt.h.Name())
	}
	rt.log.Info("serving", "socket", ln.Addr().String(), "heap", rt.h.Name(), "heap_bytes", rt.h.Size(),
		"executors", rt.nexec, "programs", rt.programNames())
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		rt.mu.Lock()
		rt.conns[c] = peer{pid: -1, pidfd: -1}
		rt.mu.Unlock()
		rt.wg.Go(func() { rt.serveConn(c) })
	}
}

// Close stops the timers and UDP sockets, disconnects every process, frees
// the executors and detaches. Closing again does nothing.
func (rt *Runtime) Close() error {
	rt.mu.Lock()
	if rt.closing {
		rt.mu.Unlock()
		return nil // closed already, or closing in another goroutine
	}
	rt.closing = true
	close(rt.closed)
	rt.log.Info("closing: cancelling what runs, disconnecting every process")
	stops := rt.stops
	for c := range rt.conns {
		c.Close()
	}
	rt.mu.Unlock()
	// Whatever runs now stops at its next cancellation point.
	rt.cancelAll("", cancel.Shutdown)
	for _, stop := range stops {
		stop()
	}
	rt.wg.Wait()
	rt.inflight.Wait()
	for _, e := range rt.all {
		if e.m != nil {
			e.m.Close()
			rt.h.FreeOwned(e.scratch)
		}
		rt.h.FreeOwned(e.area)
		freePrivateRseq(e.private)
		// A node still in a queue stays there: Detach stops its stand-in,
		// which abandons it, and leaves the slot marked dead; the recovery
		// protocol frees the node as a dead waiter's, and Reap the slot.
		for _, n := range append(e.busy, e.node) {
			if rt.proc.NodeFree(n) {
				rt.proc.GiveNode(n)
			}
		}
	}
	rt.all = nil
	for _, p := range rt.progs {
		p.Close()
	}
	if rt.metrics != nil {
		rt.metrics.close()
	}
	rt.freeGlobals()
	return rt.proc.Detach()
}
