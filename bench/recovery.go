package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
)

// Holder is what MeasureRecovery kills: a command that attaches to the heap
// file at path, takes the lock at heap offset lock (mcs.Mutex.Lock), prints
// "held" and waits.
type Holder func(path string, lock uint64) *exec.Cmd

// HoldAndWait is a Holder's body: it does what Holder says, in this process.
func HoldAndWait(path string, lock uint64) error {
	h, err := heap.Open(path, nil)
	if err != nil {
		return err
	}
	p, err := mcs.Attach(h)
	if err != nil {
		return err
	}
	m, err := p.Mutex(lock)
	if err != nil {
		return err
	}
	if err := m.Lock(); err != nil && !errors.Is(err, mcs.ErrOwnerDied) {
		return err
	}
	fmt.Println("held")
	time.Sleep(time.Minute)
	return errors.New("holder: not killed")
}

// MeasureRecovery measures how long after SIGKILL of a Go lock holder the
// next waiter has the lock, kills times for each waiter: a goroutine of this
// process (go.*), and an extension in a JIT executor of a runtime in this
// process (jit.*). Each round starts a holder, lets the
// waiter queue and fall asleep (Go) or spin (JIT) for 2 ms, kills the holder
// and times from the kill to the waiter's return with the owner-died result.
// Figures: WAITER.p50_us and WAITER.p99_us, in microseconds, that time;
// WAITER.took_p50_us and took_p99_us, to the moment the waiter took the lock
// over (for the JIT waiter, before its program and Invoke return);
// WAITER.wake_*, to a Go waiter's wake; kills; and realtime_liveness (1 when the holders' deaths are marked by a thread at a
// real-time priority).
func MeasureRecovery(kills int, holder Holder) (map[string]float64, error) {
	dir, err := os.MkdirTemp("", "kflex-recovery")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "heap")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: 8 << 20}})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	insns, err := bytecode.Assemble(mcs.LockOnceProgram)
	if err != nil {
		return nil, err
	}
	rt, err := serve.NewWith(h, map[string]asm.Instructions{"lockonce": insns}, serve.Options{JIT: 1, Budget: -1})
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	lock, err := h.Alloc(8)
	if err != nil {
		return nil, err
	}
	*h.Uint64(lock) = 0
	m, err := rt.Process().Mutex(lock)
	if err != nil {
		return nil, err
	}
	waiters := map[string]func() error{
		"go": func() error {
			err := m.Lock()
			if !errors.Is(err, mcs.ErrOwnerDied) {
				return fmt.Errorf("go waiter: lock returned %v, not owner died", err)
			}
			m.Consistent()
			m.Unlock()
			return nil
		},
		"jit": func() error {
			r0, err := rt.Invoke(context.Background(), "lockonce", h.Base()+lock)
			if err == nil && int64(r0) != mcs.LockOwnerDied {
				err = fmt.Errorf("jit waiter: r0 %d, not LockOwnerDied", int64(r0))
			}
			return err
		},
	}
	figures := map[string]float64{}
	for _, name := range []string{"go", "jit"} {
		lat := make([]float64, 0, kills)
		var wake, took []float64
		var ways mcs.WaitStats
		for range kills {
			before := rt.Process().WaitStats()
			killed, got, err := killOnce(holder(path, lock), func() bool { return atomic.LoadUint64(h.Uint64(lock))>>32 != 0 }, waiters[name])
			if err != nil {
				return nil, fmt.Errorf("recovery, %s waiter: %w", name, err)
			}
			after := rt.Process().WaitStats()
			ways = addStats(ways, after.Sub(before))
			lat = append(lat, micros(got.Sub(killed)))
			if after.LastWake.After(killed) {
				wake = append(wake, micros(after.LastWake.Sub(killed)))
			}
			if after.LastDeath.After(killed) {
				took = append(took, micros(after.LastDeath.Sub(killed)))
			}
		}
		prefix := name
		figures[prefix+".p50_us"], figures[prefix+".p99_us"] = percentiles(lat)
		if len(wake) > 0 {
			figures[prefix+".wake_p50_us"], figures[prefix+".wake_p99_us"] = percentiles(wake)
		}
		if len(took) > 0 {
			figures[prefix+".took_p50_us"], figures[prefix+".took_p99_us"] = percentiles(took)
		}
		for way := range mcs.NumWays {
			figures[prefix+".seen_"+way.String()] = float64(ways.Seen[way])
			if way != mcs.Polled {
				figures[prefix+".parks_"+way.String()] = float64(ways.Parks[way])
			}
		}
	}
	figures["kills"] = float64(kills)
	// The holders are started like this process: with its privileges, so
	// their designated threads sleep at a real-time priority when this
	// process's does (mcs.Process.RealtimeLiveness).
	figures["realtime_liveness"] = 0
	if rt.Process().RealtimeLiveness() {
		figures["realtime_liveness"] = 1
	}
	return figures, nil
}

// addStats is the sum of two spans' counts.
func addStats(a, b mcs.WaitStats) mcs.WaitStats {
	for i := range a.Parks {
		a.Parks[i] += b.Parks[i]
		a.Seen[i] += b.Seen[i]
	}
	return a
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// percentiles sorts xs and returns its p50 and p99.
func percentiles(xs []float64) (p50, p99 float64) {
	slices.Sort(xs)
	return xs[len(xs)/2], xs[len(xs)*99/100]
}

// killOnce starts the holder, starts wait once queued reports the lock has
// a queue, kills the holder 2 ms later and returns when it killed it and
// when wait returned.
func killOnce(cmd *exec.Cmd, queued func() bool, wait func() error) (killed, returned time.Time, err error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return killed, returned, err
	}
	if err := cmd.Start(); err != nil {
		return killed, returned, err
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGKILL)
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "held" {
		return killed, returned, fmt.Errorf("holder did not take the lock (%q)", sc.Text())
	}
	type result struct {
		at  time.Time
		err error
	}
	done := make(chan result, 1)
	go func() {
		err := wait()
		done <- result{time.Now(), err}
	}()
	for deadline := time.Now().Add(10 * time.Second); !queued(); {
		if time.Now().After(deadline) {
			return killed, returned, errors.New("the waiter never queued")
		}
		time.Sleep(50 * time.Microsecond)
	}
	time.Sleep(2 * time.Millisecond)
	killed = time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return killed, returned, err
	}
	select {
	case r := <-done:
		return killed, r.at, r.err
	case <-time.After(10 * time.Second):
		return killed, returned, errors.New("the waiter still waits 10 s after the kill")
	}
}
