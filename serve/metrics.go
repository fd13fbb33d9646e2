package serve

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/mcs"
)

// The runtime's Prometheus metrics (Options.Metrics), all named kflex_*:
//
//	invocations_total{program}           finished invocations, failed ones included
//	invocation_errors_total{program}     failed invocations, cancellations included
//	invocation_duration_seconds{program} the engine's run of each invocation (not the
//	                                     wait for an executor), a histogram
//	cancellations_total{cause}           budget, context, disconnect, shutdown, request
//	lock_wait_seconds{program}           extensions' contended lock waits (below)
//	lock_hold_seconds{program}           how long the holder ahead kept the lock (below)
//	lock_owner_died_recoveries_total     mcs_lock took a lock over from a dead holder
//	locks_abandoned_total                locks cancelled invocations held, left to their
//	                                     next acquirer (who gets the owner-died result)
//	slice_yields_total                   extended time slices given back
//	executors, executors_busy            the pool, and those out of it now
//	attached_processes                   processes connected to the socket
//	owner_slots{state}                   the heap's owner table: alive, dead (not yet reaped)
//	heap_size_bytes, heap_pages{state}   the heap; its allocatable pages, free or used
//	heap_live_objects, heap_live_bytes   allocated objects, of every size
//	heap_class_objects{size,state}       per size class: live, cached, central_free
//	heap_dead_caches, heap_stranded_objects  cache slots of dead processes, and what they hold
//	heap_allocator_takeovers_total       allocator locks taken over from dead holders
//
// Counters and gauges are read when scraped: an invocation pays for them
// with the atomic add it makes anyway for Status. With metrics, it also
// reads the clock once more (twice without a time budget, whose watch reads
// it anyway) and observes its run time.
//
// Lock waits are measured where the runtime sees them without slowing the
// lock: the bytecode lock runs in the extension, and its uncontended path
// never leaves it. A waiter calls HelperLockCheck every mcs.RelaxEvery (256)
// spins; the runtime notes the first and the last call of a wait (the wait
// ends at the waiter's next other helper call, a call that returns the lock,
// or the invocation's end). lock_wait_seconds is the time between them:
// waits shorter than 256 spins are not seen, and a seen one is short by up
// to 512 spins. While a waiter is the queue's head, it waits for the holder
// ahead of it to release the lock (MCS makes the next waiter the head when
// its predecessor takes the lock); lock_hold_seconds is the time between its
// first and last check as the head: holds that an extension waited for, as
// long as it saw them, which is at most as long as they were.
type metrics struct {
	reg                         prometheus.Registerer
	runTime, lockWait, lockHold *prometheus.HistogramVec
	collector                   *collector
}

// durations are the histograms' buckets: 1 µs to 1 s, by fours.
var durations = prometheus.ExponentialBuckets(1e-6, 4, 11)

func (rt *Runtime) registerMetrics(reg prometheus.Registerer) error {
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "kflex", Name: name, Help: help, Buckets: durations}, []string{"program"})
	}
	m := &metrics{reg: reg,
		runTime:   hist("invocation_duration_seconds", "How long the engine ran each invocation."),
		lockWait:  hist("lock_wait_seconds", "Contended lock waits of extensions, as HelperLockCheck (every 256 spins) sees them."),
		lockHold:  hist("lock_hold_seconds", "How long the holder ahead kept a lock while an extension waited at the head of its queue."),
		collector: &collector{rt: rt}}
	for name, ps := range rt.stats {
		ps.runTime = m.runTime.WithLabelValues(name)
		ps.lockWait = m.lockWait.WithLabelValues(name)
		ps.lockHold = m.lockHold.WithLabelValues(name)
	}
	for i, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("serve: register metrics: %w", err)
		}
	}
	rt.metrics = m
	return nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.runTime, m.lockWait, m.lockHold, m.collector}
}

// close unregisters the metrics, and makes the collector stop reading the
// heap, which the runtime's owner may unmap once Close returns.
func (m *metrics) close() {
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
	m.collector.mu.Lock()
	m.collector.closed = true
	m.collector.mu.Unlock()
}

// timed runs e's invocation (rt.invoke), measuring it from start (zero:
// now). A clock read cost 140 to 270 ns on the (loaded) 2-CPU machine: the
// watch's start, when it has a budget, spares one.
func (m *metrics) timed(rt *Runtime, e *executor, start time.Time, arg, dataLen uint64) (uint64, error) {
	if start.IsZero() {
		start = time.Now()
	}
	r0, err := rt.invoke(e, e.prog.name, arg, dataLen)
	e.prog.runTime.Observe(time.Since(start).Seconds())
	rt.endWait(e)
	return r0, err
}

// lockWait is what the runtime has seen of an executor's wait for a lock.
type lockWait struct {
	lock        uint64    // the lock word's address (0: no wait)
	first, last time.Time // the wait's first and last HelperLockCheck
	head        time.Time // its first check as the queue's head (zero: none yet)
}

// watchWaits makes e's helpers see its lock waits: HelperLockCheck notes
// them, and every other helper call ends one (the extension runs on past
// mcs_lock).
func (m *metrics) watchWaits(rt *Runtime, e *executor, hs map[int32]interp.Helper) {
	for id, f := range hs {
		if id == abi.HelperLockCheck {
			continue
		}
		hs[id] = func(mem interp.Memory, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			rt.endWait(e)
			return f(mem, r1, r2, r3, r4, r5)
		}
	}
	check := hs[abi.HelperLockCheck]
	hs[abi.HelperLockCheck] = func(mem interp.Memory, lock, node, idx, held, r5 uint64) (uint64, error) {
		if held == 0 {
			rt.endWait(e) // the holder's call: it has the lock
		} else {
			rt.sawWait(e, lock)
		}
		r0, err := check(mem, lock, node, idx, held, r5)
		if c := int64(r0); err != nil || c == mcs.LockOwnerDied || c == mcs.LockNotRecoverable {
			rt.endWait(e) // it has the lock, or gave up
		}
		return r0, err
	}
}

// sawWait notes a HelperLockCheck of e waiting for the lock at lock.
func (rt *Runtime) sawWait(e *executor, lock uint64) {
	now := time.Now()
	if e.wait.lock != lock {
		rt.endWait(e)
		e.wait = lockWait{lock: lock, first: now}
	}
	e.wait.last = now
	if e.wait.head.IsZero() {
		// The head, or a node that found no predecessor (it keeps its
		// waiting state: mcs.Process.Leave).
		if n := rt.proc.QueueNode(e.node.Index); n.State == mcs.NodeHead || n.Prev == 0 {
			e.wait.head = now
		}
	}
}

// endWait observes e's wait, if it has one.
func (rt *Runtime) endWait(e *executor) {
	w := e.wait
	if w.lock == 0 {
		return
	}
	e.wait = lockWait{}
	e.prog.lockWait.Observe(w.last.Sub(w.first).Seconds())
	if !w.head.IsZero() {
		e.prog.lockHold.Observe(w.last.Sub(w.head).Seconds())
	}
}

// collector reads the runtime's counters and its heap when scraped.
type collector struct {
	rt     *Runtime
	mu     sync.Mutex // held while reading the heap
	closed bool       // the runtime closed: the heap may be gone
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("kflex_"+name, help, labels, nil)
}

var (
	descInvocations = desc("invocations_total", "Finished invocations, failed ones included.", "program")
	descErrors      = desc("invocation_errors_total", "Failed invocations, cancellations included.", "program")
	descCancels     = desc("cancellations_total", "Cancelled invocations, by cause.", "cause")
	descRecoveries  = desc("lock_owner_died_recoveries_total", "Locks an extension's mcs_lock took over from a dead holder (LockOwnerDied).")
	descAbandoned   = desc("locks_abandoned_total", "Locks cancelled invocations held, left to their next acquirer with the owner-died result.")
	descYields      = desc("slice_yields_total", "Extended time slices extensions gave back.")
	descExecutors   = desc("executors", "Executors in the pool.")
	descBusy        = desc("executors_busy", "Executors running an invocation (or out of the pool).")
	descAttached    = desc("attached_processes", "Processes connected to the runtime's socket.")
	descOwners      = desc("owner_slots", "Occupied slots of the heap's owner table, by state (alive, dead: not yet reaped).", "state")
	descHeapSize    = desc("heap_size_bytes", "The heap's size.")
	descPages       = desc("heap_pages", "The heap's allocatable pages, by state (free, used).", "state")
	descLiveObjs    = desc("heap_live_objects", "Allocated objects of every size.")
	descLiveBytes   = desc("heap_live_bytes", "Bytes in allocated objects.")
	descClass       = desc("heap_class_objects", "Objects of one size class, by state (live, cached, central_free).", "size", "state")
	descDeadCaches  = desc("heap_dead_caches", "Allocator cache slots whose process died, not yet reaped.")
	descStranded    = desc("heap_stranded_objects", "Objects in the cache slots of dead processes.")
	descTakeovers   = desc("heap_allocator_takeovers_total", "Allocator locks taken over from dead holders, ever.")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInvocations, descErrors, descCancels, descRecoveries, descAbandoned, descYields,
		descExecutors, descBusy, descAttached, descOwners, descHeapSize, descPages, descLiveObjs, descLiveBytes, descClass,
		descDeadCaches, descStranded, descTakeovers} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	rt := c.rt
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		metric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v uint64, labels ...string) {
		metric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for name, ps := range rt.stats {
		counter(descInvocations, ps.invocations.Load(), name)
		counter(descErrors, ps.errors.Load(), name)
	}
	for cause := cancel.Budget; int(cause) < cancel.Causes; cause++ {
		counter(descCancels, rt.counts.cancels[cause].Load(), cause.Name())
	}
	counter(descRecoveries, rt.counts.recoveries.Load())
	counter(descAbandoned, rt.counts.abandoned.Load())
	counter(descYields, rt.yields.Load())
	gauge(descExecutors, uint64(rt.nexec))
	gauge(descBusy, uint64(rt.busy()))
	gauge(descAttached, uint64(rt.attached()))

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	var alive, dead uint64
	for _, o := range mcs.Owners(rt.h) {
		if o.Dead {
			dead++
		} else {
			alive++
		}
	}
	gauge(descOwners, alive, "alive")
	gauge(descOwners, dead, "dead")
	gauge(descHeapSize, rt.h.Size())
	// Inspect reads without locks and bounds every walk; what it cannot
	// parse (a corrupt heap) it reports, and the rest is still exported.
	rep, _ := rt.h.Inspect()
	s := rep.Stats
	gauge(descPages, s.FreePages, "free")
	gauge(descPages, s.Pages-min(s.FreePages, s.Pages), "used")
	gauge(descLiveObjs, s.LiveObjects)
	gauge(descLiveBytes, s.LiveBytes)
	for _, cl := range s.Classes {
		size := strconv.FormatUint(cl.Size, 10)
		gauge(descClass, cl.Live, size, "live")
		gauge(descClass, cl.Cached, size, "cached")
		gauge(descClass, cl.CentralFree, size, "central_free")
	}
	gauge(descDeadCaches, uint64(s.DeadCaches))
	gauge(descStranded, s.Stranded)
	var takeovers uint64
	for _, l := range rep.Locks {
		takeovers += l.Takeovers
	}
	counter(descTakeovers, takeovers)
}

// attached counts the processes connected and identified.
func (rt *Runtime) attached() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	n := 0
	for _, p := range rt.conns {
		if p.pidfd >= 0 {
			n++
		}
	}
	return n
}
