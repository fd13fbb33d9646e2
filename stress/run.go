package stress

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
)

// Config is one stress run.
type Config struct {
	Procs   int // worker processes (4)
	Threads int // goroutines per worker (4)
	Locks   int // locks (4)
	// Kills ends the run after that many kills; Duration after that long.
	// With both set, whichever comes first; with neither, 100 kills.
	Kills    int
	Duration time.Duration
	Seed     uint64 // the parent's schedule; 0 picks one (Report.Seed says which)
	// Schedule, if set, makes the parent's first choices in Seed's stead,
	// one byte each; for every kill: the victim (the byte modulo Procs), the
	// aim (modulo the number of aims: anywhere, waiting, holding,
	// allocating, and in a build with mcs's fault points each of those
	// points, see faultAims) and the pause before it (byte/255 of MaxDelay).
	// Seed's generator makes the choices after the last byte, and the
	// runtime's (Config.Runtime). FuzzCrossProcess's input is one.
	Schedule []byte
	// HeapPath is the heap file to create (it must not exist); "" makes one in
	// a temporary directory, removed at the end.
	HeapPath string
	HeapSize uint64 // a power of two (256 MiB; sparse)
	// MaxProcs is the heap's owner table size (256): room for the workers
	// and for the slots of dead workers that mcs.Reap cannot free yet.
	MaxProcs int
	// Command returns the command that runs a worker: this binary re-executed
	// so that it calls WorkerMain (IsWorker tells it). Run adds WorkerEnv to
	// its environment (to os.Environ() if Env is nil). Required.
	Command func() *exec.Cmd
	// MaxWait is the liveness bound: a Lock call (or a process's exit after
	// the stop) longer than this is a stuck waiter (2 s).
	MaxWait time.Duration
	// MaxDelay bounds the parent's random pause before each kill (5 ms).
	MaxDelay time.Duration
	// Window is the holder's spin between the pair's two increments (200).
	Window int
	// ListCap is the length at which a lock's list stops growing (16).
	ListCap int
	// Plant is a bug for the harness to find: "" (none), "norepair" (a worker
	// that got ErrOwnerDied marks the lock consistent without repairing) or
	// "nolock" (workers sometimes update the pair without the lock).
	Plant string
	// Runtime adds the extension runtime's process (serve, one JIT and one
	// interpreting executor), started like a worker, whose extension takes
	// the same locks, checks and repairs the same data and updates the
	// pair, invoked on random locks and cancelled at random moments
	// (Report.Cancellations). The parent kills it as it kills the workers
	// (Report.KilledRuntime), aiming at moments when an executor holds a
	// lock or waits in a queue, and restarts it; what it held is recovered
	// like a worker's, and its heap objects (executor stacks, rseq areas)
	// go back to the heap. An executor that leaves the runtime's pool
	// (serve's reclaim found its queue node stranded and no spare) counts as
	// stuck.
	Runtime bool
	// Kernel puts the heap in a BPF arena and makes goroutine 0 of every
	// worker a kernel executor: it takes and releases the locks with the
	// lock's kernel form, run in Linux (BPF_PROG_TEST_RUN of a syscall
	// program) on the same lock words, queue nodes and data as everyone
	// else, and is killed with its worker. It needs a host that offers BPF
	// arenas, and excludes HeapPath (the heap is not a file).
	Kernel bool
	// RuntimeWindow is the extension's loop between the pair's two
	// increments, a cancellation point (4000 rounds).
	RuntimeWindow int
	// Progress, if set, is called about every 200 ms with the figures so far.
	Progress func(Report)
}

// Report is what a run found. Violations, Stuck, Leaked, Unaccounted and
// Problems are failures (Failed).
type Report struct {
	Kills         int `json:"kills"`
	Cancellations int `json:"cancellations"` // of the runtime's invocations (Config.Runtime)
	// Recoveries are acquisitions that returned ErrOwnerDied; Repaired those
	// that found the data broken and repaired it.
	Recoveries int `json:"recoveries"`
	Repaired   int `json:"repaired"`
	Violations int `json:"violations"`
	Stuck      int `json:"stuck"`
	// Leaked: allocator objects, queue nodes and owner slots left at the end
	// that nothing accounts for (LeakedObjects + LeakedNodes + LeakedSlots).
	// DeadNodesLeft and AttachLeft are leaked nodes and slots of the two
	// kinds that known mcs bugs leave (tables).
	Leaked        int `json:"leaked"`
	LeakedObjects int `json:"leaked_objects"`
	LeakedNodes   int `json:"leaked_nodes"`
	LeakedSlots   int `json:"leaked_slots"`
	DeadNodesLeft int `json:"dead_nodes_left"`
	AttachLeft    int `json:"attach_left"`
	// RecoveryP50us and P99us: from the SIGKILL of a worker holding a lock to
	// the next acquisition of that lock (by anyone, with ErrOwnerDied), over
	// RecoverySamples such kills.
	// RecoveryParked counts samples of 9 ms or more: a waiter that found the
	// death when its 10 ms park ended, not through the kernel's wake.
	RecoveryP50us   float64 `json:"recovery_p50_us"`
	RecoveryP90us   float64 `json:"recovery_p90_us"`
	RecoveryP99us   float64 `json:"recovery_p99_us"`
	RecoveryMaxUs   float64 `json:"recovery_max_us"`
	RecoveryParked  int     `json:"recovery_parked"`
	RecoverySamples int     `json:"recovery_samples"`
	Acquisitions    uint64  `json:"acquisitions"`
	// ExtensionAcquisitions are the runtime's (Config.Runtime), also counted
	// in Acquisitions.
	ExtensionAcquisitions uint64 `json:"extension_acquisitions"`
	// KernelAcquisitions are the kernel executors' (Config.Kernel), also
	// counted in Acquisitions; KernelTimeouts their bounded waits that
	// timed out and were retried; KernelUnstuck the hand-offs the kernel
	// could not finish in its bound and Go finished.
	KernelAcquisitions uint64 `json:"kernel_acquisitions"`
	KernelTimeouts     uint64 `json:"kernel_timeouts"`
	KernelUnstuck      uint64 `json:"kernel_unstuck"`
	// KernelFallbacks: acquisitions a kernel executor made from Go after
	// four timed-out kernel waits in a row (counted in Acquisitions, not
	// in KernelAcquisitions).
	KernelFallbacks uint64  `json:"kernel_fallbacks"`
	DurationS       float64 `json:"duration_s"`
	// What the victim's goroutines were doing when the signal was sent: the
	// state the kill aimed at if one was in it, else the first found of
	// holding, waiting, allocating. A kill counts once.
	KilledHolding   int `json:"killed_holding"`
	KilledWaiting   int `json:"killed_waiting"`
	KilledAllocator int `json:"killed_allocator"`
	KilledOther     int `json:"killed_other"`
	// KilledFault: workers that killed themselves at the mcs fault point a
	// kill armed them with (builds with -tags kflexfault).
	KilledFault int `json:"killed_fault"`
	// KilledRuntime counts the kills of the runtime's process (also counted
	// by what its executors were doing).
	KilledRuntime int `json:"killed_runtime"`
	// StrandedAtStart: live objects that nothing names, at most one per kill
	// of the runtime while it started (an owned object allocated, not yet
	// listed); more would be leaked.
	StrandedAtStart int `json:"stranded_at_start"`
	// MaxWaitMs is the longest Lock call of any worker goroutine.
	MaxWaitMs float64 `json:"max_wait_ms"`
	// Orphans: objects that kills left allocated outside the lists and that
	// dead threads' hold words explain; freed at the end.
	Orphans     int      `json:"orphans"`
	Unaccounted int      `json:"unaccounted"` // worker exits neither clean nor our SIGKILL
	Procs       int      `json:"procs"`
	Threads     int      `json:"threads"`
	Locks       int      `json:"locks"`
	Seed        uint64   `json:"seed"`
	Problems    []string `json:"problems,omitempty"`
}

// Failed reports whether the run found anything wrong.
func (r Report) Failed() bool {
	return r.Violations > 0 || r.Stuck > 0 || r.Leaked > 0 || r.Unaccounted > 0 || len(r.Problems) > 0
}

func (c *Config) defaults() error {
	if c.Command == nil {
		return errors.New("stress: no worker command")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Procs, 4)
	def(&c.Threads, 4)
	def(&c.Locks, 4)
	def(&c.Window, 200)
	def(&c.ListCap, 16)
	def(&c.RuntimeWindow, 4000)
	def(&c.MaxProcs, 256)
	if c.Kills <= 0 && c.Duration <= 0 {
		c.Kills = 100
	}
	if c.HeapSize == 0 {
		c.HeapSize = 256 << 20
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 2 * time.Second
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 5 * time.Millisecond
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Kernel && c.HeapPath != "" {
		return errors.New("stress: a heap path with kernel executors: their heap is a BPF arena, not a file")
	}
	if c.Threads > 32 || c.Procs > 24 {
		return fmt.Errorf("stress: at most 24 processes of 32 goroutines (%d, %d)", c.Procs, c.Threads)
	}
	return nil
}

var plants = map[string]uint64{"": plantNone, "norepair": plantNoRepair, "nolock": plantNoLock}

// worker is one worker process slot: its current incarnation.
type worker struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd.Wait returned
	killed bool
	fault  string // the mcs fault point armed in it, at which it kills itself
}

// sigkilled reports whether the exited worker died of SIGKILL that the parent
// sent or that its armed fault point sent.
func (w *worker) sigkilled() bool {
	ws, _ := w.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return (w.killed || w.fault != "") && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// killFault is the state of a worker that killed itself at its fault point.
const killFault = ^uint64(0)

// runner is the parent's state during a run.
type runner struct {
	cfg     Config
	h       *heap.Heap
	k       *kernelRun // Config.Kernel
	p       *mcs.Process
	t       *table
	path    string
	sched   schedule
	workers []*worker
	rep     Report
	// pending recoveries: lock -> (kill time, its recovery count before the kill)
	pending  map[int][2]uint64
	samples  []float64
	stuck    map[[2]uint64]bool // (thread record, wait start) seen over the bound
	orphanOK map[uint64]int     // objects named by dead threads' holds
	pendings int                // dead threads killed while allocating (one unknown orphan each)
	auditing bool               // the parent's final takeovers: not latency samples
	// rtStartKills are kills of the runtime before it said its slot: each
	// may strand one owned object in flight (finish).
	rtStartKills int
	// waiting: a goroutine of the parent's is still in a lock's queue (an
	// audit that gave up): the heap stays mapped and the slot attached,
	// since unmapping it under that waiter would crash the process.
	waiting bool
}

// Run runs the stress test that cfg describes until its kills or duration are
// done or ctx ends, then stops the workers and checks the heap. The error is
// for a run that could not be carried out; what the run found is in the
// Report (Failed).
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.defaults(); err != nil {
		return Report{}, err
	}
	plant, ok := plants[cfg.Plant]
	if !ok {
		return Report{}, fmt.Errorf("stress: unknown planted bug %q", cfg.Plant)
	}
	r := &runner{cfg: cfg, sched: schedule{cfg.Schedule, rand.New(rand.NewPCG(cfg.Seed, 17))}, pending: map[int][2]uint64{},
		stuck: map[[2]uint64]bool{}, orphanOK: map[uint64]int{}}
	r.rep = Report{Procs: cfg.Procs, Threads: cfg.Threads, Locks: cfg.Locks, Seed: cfg.Seed}
	r.path = cfg.HeapPath
	if cfg.Kernel {
		r.path = arenaPath
	}
	if r.path == "" {
		dir, err := os.MkdirTemp("", "kflex-stress")
		if err != nil {
			return r.rep, err
		}
		defer os.RemoveAll(dir)
		r.path = filepath.Join(dir, "heap")
	}
	if err := r.setUp(plant); err != nil {
		return r.rep, err
	}
	if r.k != nil {
		defer r.k.close() // after the heap's Close
	}
	defer func() {
		if !r.waiting {
			r.p.Detach()
			r.h.Close()
		}
	}()
	start := time.Now()
	err := r.loop(ctx, start)
	r.stop()
	r.finish(start)
	r.rep.DurationS = time.Since(start).Seconds()
	return r.rep, err
}

func (r *runner) setUp(plant uint64) error {
	c := r.cfg
	// Nodes: one per goroutine waiting at once, few, so that the node table
	// scans of mcs.Reap after every kill stay cheap with many slots.
	opts := &heap.Options{Params: heap.Params{Size: c.HeapSize,
		MaxProcs: uint32(c.MaxProcs), NodesPerProc: uint32(max(16, c.Threads, nodesForRuntime(c)))}}
	var h *heap.Heap
	var err error
	if c.Kernel {
		r.k, h, err = newKernelRun(c.HeapSize, opts)
	} else {
		h, err = heap.Create(r.path, opts)
	}
	if err != nil {
		return fmt.Errorf("stress: %w", err)
	}
	r.h = h
	closeAll := func() {
		h.Close()
		if r.k != nil {
			r.k.close()
		}
	}
	p, err := mcs.Attach(h)
	if err != nil {
		closeAll()
		return fmt.Errorf("stress: %w", err)
	}
	r.p = p
	size := tableSize(c.Procs, c.Threads, c.Locks)
	off, err := h.Alloc(size)
	if err != nil {
		p.Detach()
		closeAll()
		return fmt.Errorf("stress: table: %w", err)
	}
	clear(h.Bytes(off, size))
	t := &table{h: h, off: off, procs: c.Procs, threads: c.Threads, locks: c.Locks}
	for i := range c.Locks {
		s := sentinel(t.lock(i))
		t.store(s+oNext, s)
		t.store(s+oPrev, s)
		t.store(t.lock(i)+lIndex, uint64(i))
	}
	for k, v := range map[uint64]uint64{tProcs: uint64(c.Procs), tThreads: uint64(c.Threads), tLocks: uint64(c.Locks),
		tPlant: plant, tWindow: uint64(c.Window), tCap: uint64(c.ListCap), tRtWindow: uint64(c.RuntimeWindow),
		tKernel: boolWord(c.Kernel)} {
		t.store(off+k, v)
	}
	t.store(off+tMagic, magic)
	atomic.StoreUint64(h.Root(tableRoot), off)
	r.t = t
	r.workers = make([]*worker, c.Procs+r.runtimes())
	for i := range r.workers {
		if err := r.start(i, ""); err != nil {
			return err
		}
	}
	return nil
}

// start starts worker i, with mcs fault point fault armed if not "".
func (r *runner) start(i int, fault string) error {
	cmd := r.cfg.Command()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	idx := strconv.Itoa(i)
	if i == r.cfg.Procs {
		idx = RuntimeWorker
	}
	cmd.Env = append(cmd.Env, WorkerEnv+"="+r.path+","+idx)
	if fault != "" {
		cmd.Env = append(cmd.Env, faultEnv+"="+fault)
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if r.k != nil {
		cmd.ExtraFiles = r.k.files // arenaFD, holdFD, releaseFD
	}
	// Its own process group, so that a terminal's Ctrl-C reaches only the
	// parent, which then stops the workers and checks; killed with the
	// parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("stress: start worker %d: %w", i, err)
	}
	w := &worker{cmd: cmd, done: make(chan struct{}), fault: fault}
	go func() { cmd.Wait(); close(w.done) }()
	r.workers[i] = w
	return nil
}

// runtimeOnce waits, before the first kill of the runtime that finds it
// has never taken a lock, until it has (for at most runtimeOnceWait): where
// the runtime starts slowly (under an emulator, the kernel tests' VM), a
// run's kills could otherwise all land before any incarnation of it runs an
// extension, and the run would exercise no extension at all (seen in 1 of 6
// runs of TestKillsKernel). Only the timing changes: the seed's choices stay
// the same.
func (r *runner) runtimeOnce() {
	for deadline := time.Now().Add(runtimeOnceWait); r.t.load(r.t.off+tRtAcquired) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// runtimeOnceWait bounds runtimeOnce: a runtime that takes no lock in that
// long is broken, and the run's report says so (no extension acquisitions).
const runtimeOnceWait = 20 * time.Second

// loop kills and restarts workers until the run is over.
func (r *runner) loop(ctx context.Context, start time.Time) error {
	c := r.cfg
	lastProgress := time.Now()
	over := func() bool {
		return c.Kills > 0 && r.rep.Kills >= c.Kills || c.Duration > 0 && time.Since(start) >= c.Duration || ctx.Err() != nil
	}
	for !over() {
		// The schedule: victim, what to wait for, delay. All drawn up front
		// so that a seed (or Config.Schedule) gives the same sequence of
		// choices.
		victim := r.sched.intN(len(r.workers)) // c.Procs: the runtime
		aim := r.sched.intN(len(aims))
		r.pause(r.sched.delay(c.MaxDelay))
		if victim == c.Procs {
			r.runtimeOnce()
		}
		if err := r.watch(); err != nil {
			return err
		}
		if over() { // the last kill was a worker's at its fault point
			return nil
		}
		// A fault point is reached by the process it is armed in: the
		// victim is killed at once and its next incarnation armed.
		fault := faultPoint(aim)
		if fault != "" {
			aim = stIdle
		}
		if victim == c.Procs {
			// The runtime's lock is bytecode. It has fault points too
			// (mcs.FaultHelper; TestRuntimeKilledInBytecodeLock), but the
			// harness does not account for a runtime's death at its own
			// point (OnFault is a Go worker's): none is armed there.
			fault = ""
		}
		r.kill(victim, uint64(aim))
		if err := r.start(victim, fault); err != nil {
			return err
		}
		if c.Progress != nil && time.Since(lastProgress) > 200*time.Millisecond {
			lastProgress = time.Now()
			c.Progress(r.snapshot(start))
		}
	}
	return nil
}

// pause sleeps d while watching the run.
func (r *runner) pause(d time.Duration) {
	end := time.Now().Add(d)
	for {
		r.scan()
		left := time.Until(end)
		if left <= 0 {
			return
		}
		time.Sleep(min(left, time.Millisecond))
	}
}

// watch notices workers that exited on their own (exited) and restarts them,
// unarmed.
func (r *runner) watch() error {
	for i, w := range r.workers {
		select {
		case <-w.done:
			r.exited(i, w)
			if err := r.start(i, ""); err != nil {
				return err
			}
		default:
		}
	}
	return nil
}

// kill SIGKILLs worker i once one of its goroutines is in state aim (or after
// 20 ms without one, or at once for aim 0), waits for it and settles what it
// left: its held locks become pending recoveries, its hold words orphan
// allowances.
func (r *runner) kill(i int, aim uint64) {
	w := r.workers[i]
	before := make([]uint64, r.t.locks)
	for l := range before {
		before[l] = r.t.load(r.t.lock(l) + lRecoveries)
	}
	rt := r.t.load(r.t.off + tRtSlot)
	isRuntime := i == r.cfg.Procs
	state := uint64(stIdle)
	deadline := time.Now().Add(20 * time.Millisecond)
	for spins := 0; ; spins++ {
		if !isRuntime && aim != 0 && r.anyIn(i, aim) {
			state = aim
			break
		}
		if isRuntime {
			state = r.runtimeState(rt)
		} else {
			state = r.mostInteresting(i)
		}
		if aim == 0 || state == aim || time.Now().After(deadline) {
			break
		}
		if spins%64 == 63 {
			runtime.Gosched() // the workers need the CPU to get there
		}
	}
	at := now()
	w.killed = true
	w.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(r.cfg.MaxWait):
		r.problem("worker %d (pid %d) still running %v after SIGKILL; its threads: %s", i, w.cmd.Process.Pid, r.cfg.MaxWait, threadStates(w.cmd.Process.Pid))
		<-w.done
	}
	if isRuntime {
		r.settleRuntime(w, state, at, before, rt)
		return
	}
	if r.t.load(r.t.thread(i, 0)+rFaulted) != 0 {
		// It died at its fault point, perhaps long before (what the aim
		// read was a dead process's last word, and a lock it held may be
		// recovered already, before the counts in before).
		r.settle(i, w, killFault, 0, nil)
		return
	}
	r.settle(i, w, state, at, before)
}

// exited accounts for an exit of worker i that the parent did not cause: a
// death at its armed fault point is a kill (settle), anything else goes to
// ended.
func (r *runner) exited(i int, w *worker) {
	if !w.killed && w.sigkilled() {
		r.settle(i, w, killFault, 0, nil)
		return
	}
	r.ended(i, w)
}

// settleRuntime is settle for the runtime's process, which was in state
// (read from the lock words and its nodes, its owner slot + 1 rt, 0 while it
// started) when killed at time at: the locks the dead slot holds become
// pending recoveries.
func (r *runner) settleRuntime(w *worker, state, at uint64, before []uint64, rt uint64) {
	r.count(state)
	r.rep.KilledRuntime++
	r.ended(r.cfg.Procs, w)
	if rt == 0 {
		r.rtStartKills++
		r.pendings++ // a registry block is a small object: an orphan
	}
	for l := range r.t.locks {
		if r.runtimeHolds(rt, l) {
			r.pend(l, at, before)
		}
	}
	r.t.store(r.t.off+tRtSlot, 0)
	r.reap()
}

// count counts a kill of a process that was in state.
func (r *runner) count(state uint64) {
	r.rep.Kills++
	switch state {
	case stHolding:
		r.rep.KilledHolding++
	case stWaiting:
		r.rep.KilledWaiting++
	case stAllocator:
		r.rep.KilledAllocator++
	case killFault:
		r.rep.KilledFault++
	default:
		r.rep.KilledOther++
	}
}

// pend makes lock l a pending recovery, measured from at against its
// recovery count before (not for a death found after the fact: before nil).
func (r *runner) pend(l int, at uint64, before []uint64) {
	if _, ok := r.pending[l]; !ok && before != nil {
		r.pending[l] = [2]uint64{at, before[l]}
	}
}

// reap gives the dead's slots and allocator state back now, beside the live
// workers, as a runtime would.
func (r *runner) reap() {
	mcs.Reap(r.h)
	if _, err := r.h.Reap(); err != nil {
		r.problem("heap reap after kill %d: %v", r.rep.Kills, err)
	}
	r.scan()
}

// settle counts the death of worker i, which was in state when killed at
// time at, and settles what it left: its held locks become pending
// recoveries (measured from at against the recovery counts before; not for
// a death found after the fact, before nil), its hold words orphan
// allowances; then the dead are reaped.
func (r *runner) settle(i int, w *worker, state, at uint64, before []uint64) {
	r.count(state)
	r.ended(i, w)
	for th := range r.t.threads {
		rec := r.t.thread(i, th)
		if l := r.t.load(rec + rHeldLock); l != 0 {
			r.pend(int(l-1), at, before)
		}
		switch x := r.t.load(rec + rHold); x {
		case 0:
		case holdPending:
			r.pendings++
		default:
			r.orphanOK[x]++
		}
		for _, f := range []uint64{rState, rWaitSince, rHeldLock, rHold, rFaulted} {
			r.t.store(rec+f, 0)
		}
	}
	r.reap()
}

// runtimeState is what the runtime process (owner slot + 1 rt) does, as a
// kill aims at it: one of its executors holds a lock, or waits for one.
func (r *runner) runtimeState(rt uint64) uint64 {
	for l := range r.t.locks {
		if r.runtimeHolds(rt, l) {
			return stHolding
		}
	}
	if r.runtimeQueued(rt) {
		return stWaiting
	}
	return stIdle
}

// runtimes is how many runtime processes the run has (Config.Runtime): 0 or 1.
func (r *runner) runtimes() int {
	if r.cfg.Runtime {
		return 1
	}
	return 0
}

// anyIn reports whether one of worker i's goroutines is in state s.
func (r *runner) anyIn(i int, s uint64) bool {
	for th := range r.t.threads {
		if r.t.load(r.t.thread(i, th)+rState) == s {
			return true
		}
	}
	return false
}

// mostInteresting is the state of worker i's goroutines that a kill aims at
// first: holding, then waiting, then allocating.
func (r *runner) mostInteresting(i int) uint64 {
	best := uint64(stIdle)
	for th := range r.t.threads {
		s := r.t.load(r.t.thread(i, th) + rState)
		if s == stHolding {
			return s
		}
		if s == stWaiting || s == stAllocator && best != stWaiting {
			best = s
		}
	}
	return best
}

// ended accounts for worker i's exit: our SIGKILL or its fault point's, or a
// clean exit after the stop; anything else is unaccounted.
func (r *runner) ended(i int, w *worker) {
	ps := w.cmd.ProcessState
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case w.sigkilled():
	case r.t.load(r.t.off+tStop) != 0 && ws.Exited() && ws.ExitStatus() == 0:
	default:
		r.rep.Unaccounted++
		r.problem("worker %d (pid %d): %v", i, w.cmd.Process.Pid, ps)
	}
}

// scan looks at every waiting goroutine (stuck over the bound?) and at the
// pending recoveries (has someone taken the lock since the kill?).
func (r *runner) scan() {
	t := now()
	bound := uint64(r.cfg.MaxWait.Nanoseconds())
	for i := range r.cfg.Procs {
		if r.t.load(r.t.thread(i, 0)+rFaulted) != 0 {
			continue // dead at its fault point: its waits ended there (settle clears them)
		}
		for th := range r.t.threads {
			rec := r.t.thread(i, th)
			if s := r.t.load(rec + rWaitSince); s != 0 && t > s && t-s > bound && !r.stuck[[2]uint64{rec, s}] {
				r.stuck[[2]uint64{rec, s}] = true
				r.rep.Stuck++
				r.problem("worker %d goroutine %d waits for a lock for over %v", i, th, r.cfg.MaxWait)
			}
		}
	}
	for l, p := range r.pending {
		rec := r.t.lock(l)
		if r.t.load(rec+lRecoveries) > p[1] {
			if at := r.t.load(rec + lRecoveredAt); at > p[0] && !r.auditing {
				r.samples = append(r.samples, float64(at-p[0])/1e3)
			}
			delete(r.pending, l)
		}
	}
}

func boolWord(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func (r *runner) problem(format string, args ...any) {
	if len(r.rep.Problems) < 20 {
		r.rep.Problems = append(r.rep.Problems, fmt.Sprintf(format, args...))
	}
}

// snapshot is the report so far, from the heap's counters.
func (r *runner) snapshot(start time.Time) Report {
	rep := r.rep
	rep.Problems = slices.Clone(rep.Problems)
	var maxWait uint64
	for i := range r.cfg.Procs {
		for th := range r.t.threads {
			rec := r.t.thread(i, th)
			rep.Acquisitions += r.t.load(rec + rAcquired)
			if th == 0 && r.cfg.Kernel {
				// A fallback is counted as its lock call returns, the
				// acquisition a moment later: a kill between leaves one
				// more fallback than acquisitions.
				fb, acq := r.t.load(rec+rKernelFallbacks), r.t.load(rec+rAcquired)
				rep.KernelAcquisitions += acq - min(fb, acq)
				rep.KernelFallbacks += fb
				rep.KernelTimeouts += r.t.load(rec + rKernelTimeouts)
				rep.KernelUnstuck += r.t.load(rec + rKernelUnstuck)
			}
			rep.Repaired += int(r.t.load(rec + rRepaired))
			rep.Violations += int(r.t.load(rec + rViolation))
			maxWait = max(maxWait, r.t.load(rec+rMaxWait))
		}
	}
	for l := range r.t.locks {
		rep.Recoveries += int(r.t.load(r.t.lock(l) + lRecoveries))
	}
	rep.ExtensionAcquisitions = r.t.load(r.t.off + tRtAcquired)
	rep.Acquisitions += rep.ExtensionAcquisitions
	rep.Repaired += int(r.t.load(r.t.off + tRtRepaired))
	rep.Violations += int(r.t.load(r.t.off + tRtViolations))
	rep.Cancellations = int(r.t.load(r.t.off + tRtCancellations))
	rep.Stuck += int(r.t.load(r.t.off + tRtStuck))
	rep.MaxWaitMs = float64(maxWait) / 1e6
	if n := len(r.samples); n > 0 {
		s := slices.Clone(r.samples)
		slices.Sort(s)
		rep.RecoveryP50us, rep.RecoveryP90us, rep.RecoveryP99us = s[n/2], s[n*90/100], s[min(n-1, n*99/100)]
		rep.RecoveryMaxUs, rep.RecoverySamples = s[n-1], n
		rep.RecoveryParked = n - sort.SearchFloat64s(s, 9000)
	}
	rep.DurationS = time.Since(start).Seconds()
	return rep
}

// threadStates describes what each thread of process pid is doing, from
// /proc: its state letter and the kernel function it sleeps in, for a
// process that does not die.
func threadStates(pid int) string {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, t := range tasks {
		stat, _ := os.ReadFile(filepath.Join(dir, t.Name(), "stat"))
		state := "?"
		if _, rest, ok := strings.Cut(string(stat), ") "); ok && rest != "" {
			state = rest[:1]
		}
		wchan, _ := os.ReadFile(filepath.Join(dir, t.Name(), "wchan"))
		fmt.Fprintf(&b, "%s %s %s; ", t.Name(), state, wchan)
	}
	return strings.TrimSuffix(b.String(), "; ")
}
