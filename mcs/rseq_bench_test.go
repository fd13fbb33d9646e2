package mcs

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kflex-go/kflex/rseq"
)

// These benchmarks register rseq on their threads. In a cgo binary (any test
// binary that links testify) glibc owns rseq unless the process runs with
// GLIBC_TUNABLES=glibc.pthread.rseq=0, as make bench does; otherwise they
// measure the fallback, and say so.

// BenchmarkSliceRequestCost is the uncontended lock+unlock with and without the
// time-slice request around it, alternating in one run: the cost the request
// path adds when nobody contends (goal: at most 1 ns). "inline" writes the
// request and release next to Lock and Unlock, which all inline; "extended"
// calls LockExtended and UnlockExtended, which are too large to inline and so
// add two calls.
func BenchmarkSliceRequestCost(b *testing.B) {
	w := newWorld(b, 1<<20)
	m := mutex(b, w.p, w.locks(b, 1)[0])
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	th := rseq.Register()
	defer th.Unregister()
	b.Logf("thread: %v (%s)", th.Status(), th.Reason())
	const batch = 1 << 16
	var plain, inline, extended time.Duration
	rounds := 0
	for b.Loop() {
		t0 := time.Now()
		for range batch {
			mustLock(m.Lock())
			m.Unlock()
		}
		t1 := time.Now()
		for range batch {
			th.Request()
			mustLock(m.Lock())
			m.Unlock()
			th.Release()
		}
		t2 := time.Now()
		for range batch {
			mustLock(m.LockExtended(th))
			m.UnlockExtended(th)
		}
		extended += time.Since(t2)
		inline += t2.Sub(t1)
		plain += t1.Sub(t0)
		rounds++
	}
	n := float64(rounds * batch)
	ns := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / n }
	b.ReportMetric(ns(plain), "plain-ns")
	b.ReportMetric(ns(inline-plain), "inline-added-ns")
	b.ReportMetric(ns(extended-plain), "extended-added-ns")
	b.ReportMetric(0, "ns/op")
}

// oversubscribed runs threads OS threads (GOMAXPROCS = threads, each goroutine
// locked to its thread) on one lock for d, with a critical section and some
// work outside it, and returns acquisitions per second. With more threads than
// cores the kernel preempts holders; extended uses the time-slice request.
func oversubscribed(b *testing.B, m *Mutex, counter *uint64, threads int, extended bool, d time.Duration) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
	var stop atomic.Bool
	var total atomic.Uint64
	var wg sync.WaitGroup
	for range threads {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			th := rseq.Register()
			defer th.Unregister()
			n := uint64(0)
			for !stop.Load() {
				if extended {
					mustLock(m.LockExtended(th))
				} else {
					mustLock(m.Lock())
				}
				for range 20 { // ~100 ns of work holding the lock
					*counter++
				}
				if extended {
					m.UnlockExtended(th)
				} else {
					m.Unlock()
				}
				for i := range 40 { // and some outside it
					sink64 += uint64(i)
				}
				n++
			}
			total.Add(n)
		})
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	return float64(total.Load()) / d.Seconds()
}

var sink64 uint64

// BenchmarkOversubscribedThreads measures lock throughput with 2, 4, 8 and 16
// OS threads on the machine's cores, with and without the time-slice request
// path, and the ratio of 8× oversubscription (16 threads on 2 cores) to 1× (2
// threads): the goal is at least 0.5 where the kernel has no slice extension.
func BenchmarkOversubscribedThreads(b *testing.B) {
	w := newWorld(b, 1<<20)
	off := w.locks(b, 1)[0]
	m := mutex(b, w.p, off)
	counter := w.h.Uint64(off + 8)
	cores := runtime.NumCPU()
	for _, extended := range []bool{false, true} {
		name := "plain"
		if extended {
			name = "extended"
		}
		b.Run(name, func(b *testing.B) {
			rates := map[int]float64{}
			for b.Loop() {
				for _, t := range []int{cores, 2 * cores, 4 * cores, 8 * cores} {
					rates[t] += oversubscribed(b, m, counter, t, extended, 200*time.Millisecond)
				}
			}
			for t, r := range rates {
				b.ReportMetric(r/float64(b.N), fmt.Sprintf("ops/s@%d", t))
			}
			b.ReportMetric(rates[8*cores]/rates[cores], "ratio8x")
			b.ReportMetric(0, "ns/op")
		})
	}
}
