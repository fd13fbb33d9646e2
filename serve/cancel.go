package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/mcs"
)

// DefaultBudget is how long one invocation may run when Options.Budget does
// not say: an extension is a short handler (microseconds), so the budget is a
// safety net, not a scheduler. It matches the bound Linux puts on the same
// kind of code (may_goto's timed form and rqspinlock give up after 250 ms), so
// a program that runs within the kernel's limits runs within kflex's.
const DefaultBudget = 250 * time.Millisecond

// running is one invocation in flight, as Cancel and Close find it.
type running struct {
	program string
	watch   *cancel.Watch
}

// budget is program name's time budget.
func (rt *Runtime) budget(name string) time.Duration {
	if d, ok := rt.budgets[name]; ok {
		return d
	}
	return rt.defaultBudget
}

// watch starts the watchdog of an invocation of name on e and registers it.
func (rt *Runtime) watch(ctx context.Context, e *executor, name string) *running {
	r := &running{program: name, watch: cancel.Start(ctx, rt.budget(name), e.cancel)}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closing {
		r.watch.Fire(cancel.Shutdown)
	}
	rt.running[r] = struct{}{}
	return r
}

// unwatch ends r's watch and turns err into what the caller sees.
func (rt *Runtime) unwatch(r *running, err error) error {
	r.watch.Stop()
	rt.mu.Lock()
	delete(rt.running, r)
	rt.mu.Unlock()
	return r.watch.Result(r.program, err)
}

// Cancel cancels every running invocation of program name (all programs if
// name is ""), which then return an error wrapping abi.ErrCancelled with
// cause cancel.Request. It returns how many it cancelled.
func (rt *Runtime) Cancel(name string) int {
	return rt.cancelAll(name, cancel.Request)
}

func (rt *Runtime) cancelAll(name string, c cancel.Cause) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	n := 0
	for r := range rt.running {
		if name == "" || r.program == name {
			r.watch.Fire(c)
			n++
		}
	}
	return n
}

// Running lists the programs of the invocations in flight, one entry each.
func (rt *Runtime) Running() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var out []string
	for r := range rt.running {
		out = append(out, r.program)
	}
	return out
}

// cancel stops what e runs at its next cancellation point.
func (e *executor) cancel() {
	if e.im != nil {
		e.im.Cancel()
	} else {
		e.m.Cancel()
	}
}

// setDeadline is when e's engine cancels the run itself (zero: never).
func (e *executor) setDeadline(d time.Time) {
	if e.im != nil {
		e.im.Deadline = d
	} else {
		e.m.Deadline = d
	}
}

func (e *executor) clearCancel() {
	if e.im != nil {
		e.im.ClearCancel()
	} else {
		e.m.ClearCancel()
	}
}

// checkBudgets refuses a budget for a program the runtime does not have, or
// a negative one.
func (rt *Runtime) checkBudgets() error {
	for name, d := range rt.budgets {
		if !rt.has(name) {
			return fmt.Errorf("serve: budget for %q: no such program", name)
		}
		if d < 0 {
			return fmt.Errorf("serve: budget %v for %s is negative", d, name)
		}
	}
	return nil
}

func (e *executor) cancelled() bool {
	if e.im != nil {
		return e.im.Cancelled()
	}
	return e.m.Cancelled()
}

func (e *executor) mem() interp.Memory {
	if e.im != nil {
		return e.im
	}
	return e.m
}

// retireNode sets e's node aside, in a queue until its stand-in has handed
// the head position on and freed it (mcs.Process.Leave), and gives e another
// one if the process has one free; otherwise e keeps its node and reclaim
// waits for it.
func (rt *Runtime) retireNode(e *executor) {
	if n, ok := rt.proc.TryTakeNode(); ok {
		e.busy = append(e.busy, e.node)
		e.node = n
	}
}

// reclaimWait bounds how long an executor whose node is still in a queue
// waits for its stand-in to free it.
const reclaimWait = 100 * time.Millisecond

// reclaim gives back the nodes e retired that their stand-ins have freed, and
// makes sure e has a free node for its next call: its own once it is freed,
// or a spare. It reports false when neither came within reclaimWait: the
// head position has not reached e's node yet (a holder keeps the lock long,
// and many cancellations in its queue used every spare), and e leaves the
// pool until it does (rejoin).
func (rt *Runtime) reclaim(e *executor) bool {
	deadline := time.Now().Add(reclaimWait)
	for spins := 0; !rt.reclaimNow(e); spins++ {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Duration(min(spins, 100)) * 10 * time.Microsecond)
	}
	return true
}

// reclaimNow is one look of reclaim's: it reports whether e has a free node.
func (rt *Runtime) reclaimNow(e *executor) bool {
	kept := e.busy[:0]
	for _, n := range e.busy {
		if rt.proc.NodeFree(n) {
			rt.proc.GiveNode(n)
		} else {
			kept = append(kept, n)
		}
	}
	e.busy = kept
	if rt.proc.NodeFree(e.node) {
		return true
	}
	if n, ok := rt.proc.TryTakeNode(); ok {
		e.busy = append(e.busy, e.node)
		e.node = n
		return true
	}
	return false
}

// rejoin puts e, out of the pool (reclaim), back once it has a free node
// again — a granter passed its queue on, or another executor gave a spare
// back — looking every 10 ms; or leaves it out when the runtime closes.
func (rt *Runtime) rejoin(e *executor) {
	defer rt.inflight.Done()
	for {
		select {
		case <-rt.closed:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if rt.reclaimNow(e) {
			e.stuck = false
			rt.stuck.Add(-1)
			rt.log.Info("an executor is back in the pool: its queue node was passed on", "node", e.node.Index)
			rt.execs <- e
			return
		}
	}
}

// releaseHeld releases what a cancelled invocation of program name on e
// holds, exactly as the verifier's table says for every frame of its stack
// (cancel.Plan): its locks are abandoned (their next acquirer gets the
// owner-died result) and its unpublished allocations freed. An allocation the
// table names that the invocation did not make is not freed: a frame slot it
// was read from may have been overwritten through the heap. An error means
// the table and the stack disagree, or a resource could not be released: the
// caller reports it with the cancellation.
func (rt *Runtime) releaseHeld(e *executor, name string, err error) error {
	var re *interp.RuntimeError
	if !errors.As(err, &re) || len(re.Stack) == 0 {
		return nil // stopped before it ran
	}
	read := func(addr uint64) uint64 {
		b, err := e.mem().Bytes(addr, 8, false)
		if err != nil {
			return 0
		}
		return binary.LittleEndian.Uint64(b)
	}
	held, err := cancel.Plan(rt.verified[name], re.Stack, read)
	if err != nil {
		return err
	}
	var errs []error
	for _, lock := range held.Locks() {
		if lock == 0 {
			errs = append(errs, errors.New("a held lock whose address no register keeps"))
			continue
		}
		if err := rt.proc.Abandon(lock, rt.proc.Held()); errors.Is(err, mcs.ErrNotRecoverable) {
			continue // its mcs_lock returned LockNotRecoverable: not held, as mcs_unlock would find it
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		rt.counts.abandoned.Add(1)
	}
	for _, a := range held.Allocs() {
		off := a.Ptr & rt.h.Mask()
		if _, ok := e.allocs[off]; !ok {
			errs = append(errs, fmt.Errorf("allocation %#x (insn %d) was not made by this invocation: not freed", a.Ptr, a.Site))
			continue
		}
		delete(e.allocs, off)
		if err := rt.h.Free(off); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// callHook lets a connection cancel a call it made without a context per
// call (a context's registration and an AfterFunc cost a lone caller's round
// trip about a microsecond): the first cause fired is kept, and reaches the
// call's watch as soon as it has one. A nil hook does nothing.
type callHook struct {
	mu      sync.Mutex
	w       *cancel.Watch
	fired   cancel.Cause
	firedCh chan struct{} // closed when a cause fires; made only for a call waiting for an executor
}

// fire cancels the call for cause c.
func (h *callHook) fire(c cancel.Cause) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fired != cancel.None {
		return
	}
	h.fired = c
	if h.w != nil {
		h.w.Fire(c)
	}
	if h.firedCh != nil {
		close(h.firedCh)
	}
}

// attach gives the hook the call's watch (nil when the run ended), firing a
// cause that came before.
func (h *callHook) attach(w *cancel.Watch) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.w = w
	if w != nil && h.fired != cancel.None {
		w.Fire(h.fired)
	}
}

// firedChan is closed once a cause fires (nil for a nil hook: never ready).
func (h *callHook) firedChan() <-chan struct{} {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.firedCh == nil {
		h.firedCh = make(chan struct{})
		if h.fired != cancel.None {
			close(h.firedCh)
		}
	}
	return h.firedCh
}

func (h *callHook) cause() cancel.Cause {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fired
}
