package serve

import (
	"context"
	"fmt"
	"time"

	"github.com/kflex-go/kflex/cancel"
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
func (rt *Runtime) watch(ctx context.Context, e *executor, name string) (*running, error) {
	r := &running{program: name, watch: cancel.Start(ctx, rt.budget(name), e.cancel)}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closing {
		r.watch.Fire(cancel.Shutdown)
	}
	rt.running[r] = struct{}{}
	return r, nil
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
