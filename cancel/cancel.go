// Package cancel stops extension invocations that must not go on: its
// watchdog turns the causes of a cancellation — a time budget that ran out,
// a caller's context that ended, a client that went away, the runtime
// shutting down, an operator's request — into a store to the executor's
// terminate word, which compiled and interpreted code test at every
// cancellation point (every back-edge and helper call, the lock's spin loops
// included: abi). The invocation then returns an *Error that names the
// program, the instruction where it stopped and the cause, and wraps
// abi.ErrCancelled, the one value both engines return.
//
// What the invocation held where it stopped is planned from the verifier's
// tables and the call stack the engine reports (release.go: Plan): held
// locks, and the allocations it made and did not publish. An allocation is
// published when the program passed it to abi.HelperFree, stored it anywhere
// but its own frame's stack (through a heap pointer, or into the context),
// or returned it in r0 from the main program's exit; the rest are freed.
//
// Layer 5 (loader, cancel): it stands on abi and on the engines' error
// types; serve uses it.
package cancel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/jit/interp"
)

// Cause says why an invocation was cancelled.
type Cause uint8

const (
	None       Cause = iota
	Budget           // its time budget ran out
	Context          // the caller's context ended: a deadline or a cancel
	Disconnect       // the process that invoked it went away
	Shutdown         // the runtime is shutting down
	Request          // Runtime.Cancel: an operator or the application asked
)

var causeText = [...]string{
	None:       "not cancelled",
	Budget:     "its time budget ran out",
	Context:    "the caller's context ended",
	Disconnect: "the process that invoked it went away",
	Shutdown:   "the runtime is shutting down",
	Request:    "cancelled on request",
}

var causeName = [...]string{
	None:       "none",
	Budget:     "budget",
	Context:    "context",
	Disconnect: "disconnect",
	Shutdown:   "shutdown",
	Request:    "request",
}

// Causes is how many causes there are: every Cause below it has a Name.
const Causes = len(causeName)

// Name is c in one word ("budget", "context", "disconnect", "shutdown",
// "request"; "none"), for metric labels and log attributes.
func (c Cause) Name() string {
	if int(c) < len(causeName) {
		return causeName[c]
	}
	return fmt.Sprintf("cause%d", uint8(c))
}

func (c Cause) String() string {
	if int(c) < len(causeText) {
		return causeText[c]
	}
	return fmt.Sprintf("cause %d", uint8(c))
}

// Error is a cancelled invocation. errors.Is(err, abi.ErrCancelled) holds for
// it whichever engine ran the program.
type Error struct {
	Program string
	Insn    int // the cancellation point where it stopped, or -1 before it ran
	Cause   Cause
	Budget  time.Duration // for Cause == Budget
	Err     error         // the engine's error, wrapping abi.ErrCancelled
}

func (e *Error) Error() string {
	why := e.Cause.String()
	if e.Cause == Budget {
		why = fmt.Sprintf("its %v time budget ran out", e.Budget)
	}
	if e.Insn < 0 {
		return fmt.Sprintf("program %s cancelled before it ran: %s", e.Program, why)
	}
	return fmt.Sprintf("program %s cancelled at instruction %d: %s", e.Program, e.Insn, why)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrDisconnect is the cause (context.WithCancelCause) a runtime gives the
// context of the invocations of a process that went away: they are cancelled
// with cause Disconnect.
var ErrDisconnect = errors.New("the invoking process disconnected")

// Watch is the watchdog of one invocation: the first cause to fire stores to
// the terminate word (through terminate) and is remembered.
type Watch struct {
	terminate func()
	budget    time.Duration
	start     time.Time // with a budget
	deadline  time.Time

	mu     sync.Mutex
	cause  Cause
	unhook func() bool
}

// Start watches an invocation that terminate stops: it fires Context when ctx
// ends. Stop must be called when the invocation returns.
//
// The time budget is the engine's to enforce (Deadline: jit.Machine and
// interp.Machine look at the clock where they return to Go anyway, every
// abi.BackEdgeBudget back-edges): a timer per invocation would wake a
// thread, which costs a lone caller's round trip several microseconds. The
// watch attributes a cancellation that no other cause fired, past the
// deadline, to Budget.
func Start(ctx context.Context, budget time.Duration, terminate func()) *Watch {
	w := &Watch{terminate: terminate, budget: budget}
	if budget > 0 {
		w.start = time.Now()
		w.deadline = w.start.Add(budget)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ctx.Done() != nil {
		w.unhook = context.AfterFunc(ctx, func() {
			if errors.Is(context.Cause(ctx), ErrDisconnect) {
				w.Fire(Disconnect)
			} else {
				w.Fire(Context)
			}
		})
	}
	return w
}

// Fire cancels the invocation for cause c, unless it was cancelled already.
func (w *Watch) Fire(c Cause) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cause == None { // under the lock: no store after Stop returns
		w.cause = c
		w.terminate()
	}
}

// Cause is why the invocation was cancelled, or None.
func (w *Watch) Cause() Cause {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cause
}

// Started is when the watch began, if it has a budget (zero otherwise: it
// read no clock), for a caller that times the invocation with one clock
// read fewer.
func (w *Watch) Started() time.Time { return w.start }

// Deadline is when the budget runs out (zero: no budget), for the engine.
func (w *Watch) Deadline() time.Time { return w.deadline }

// Stop ends the watch: no cause fires after it returns.
func (w *Watch) Stop() {
	w.mu.Lock()
	if w.cause == None {
		w.cause = stopped
	}
	w.mu.Unlock()
	if w.unhook != nil {
		w.unhook()
	}
}

// stopped marks a watch that ended without a cancellation, so that a late
// cause does not store to a terminate word that the next invocation uses.
const stopped Cause = 0xff

// Result is err, from an invocation of program under w, as the caller
// should see it: a cancellation becomes an *Error naming the instruction
// and the cause.
func (w *Watch) Result(program string, err error) error {
	if err == nil || !errors.Is(err, abi.ErrCancelled) {
		return err
	}
	insn := -1
	var re *interp.RuntimeError
	if errors.As(err, &re) {
		insn = re.Insn
	}
	c := w.Cause()
	if c == stopped {
		c = None
		if !w.deadline.IsZero() && !time.Now().Before(w.deadline) {
			c = Budget // the engine stopped itself at the deadline
		}
	}
	return &Error{Program: program, Insn: insn, Cause: c, Budget: w.budget, Err: err}
}
