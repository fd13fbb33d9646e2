package serve

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/internal/sys/wire"
)

// What the runtime counts whether or not it has metrics: an atomic add per
// invocation, and more only when one fails. Status and the metrics read
// them.

// progStats counts one program's invocations.
type progStats struct {
	name        string
	invocations atomic.Uint64 // finished, failed ones included
	errors      atomic.Uint64 // failed, cancellations included

	// With metrics (else nil): the program's run times, and the lock waits
	// of its invocations (metrics.go).
	runTime, lockWait, lockHold prometheus.Observer
}

// counters are the runtime's counts of rare events.
type counters struct {
	cancels    [cancel.Causes]atomic.Uint64 // cancelled invocations, by cause
	recoveries atomic.Uint64                // mcs_lock took a lock over from a dead holder (LockOwnerDied)
	abandoned  atomic.Uint64                // locks a cancelled invocation held, left to their next acquirer
}

// failed counts and logs a failed invocation of ps.
func (rt *Runtime) failed(ps *progStats, err error) {
	ps.errors.Add(1)
	var ce *cancel.Error
	if !errors.As(err, &ce) {
		rt.log.Warn("invocation failed", "program", ps.name, "err", err)
		return
	}
	if int(ce.Cause) < len(rt.counts.cancels) {
		rt.counts.cancels[ce.Cause].Add(1)
	}
	level := slog.LevelInfo
	if ce.Cause == cancel.Budget {
		level = slog.LevelWarn // the program, not its caller, is at fault
	}
	rt.log.Log(context.Background(), level, "invocation cancelled", "program", ps.name, "cause", ce.Cause.Name(), "insn", ce.Insn)
}

// Status describes what a runtime runs: its programs, with their
// invocations and errors so far, and the processes connected to it.
type Status = wire.Status

// Status describes the runtime now (kflex status; OpStatus).
func (rt *Runtime) Status() Status {
	s := Status{Executors: rt.nexec, Busy: rt.busy()}
	for _, name := range rt.programNames() {
		ps := rt.stats[name]
		s.Programs = append(s.Programs, wire.ProgramStatus{Name: name, Engine: rt.engine(name),
			Invocations: ps.invocations.Load(), Errors: ps.errors.Load()})
	}
	for _, c := range rt.Clients() {
		s.Processes = append(s.Processes, wire.ProcessStatus{PID: c.PID, Slot: c.Slot, Since: c.Since})
	}
	return s
}

// busy is how many executors are out of the pool: running an invocation,
// or left it (stuck).
func (rt *Runtime) busy() int { return rt.nexec - len(rt.execs) }

// engine names what runs program name.
func (rt *Runtime) engine(name string) string {
	switch jit, in := rt.progs[name] != nil, rt.iprogs[name] != nil; {
	case jit && in:
		return "jit+interpreter"
	case jit:
		return "jit"
	default:
		return "interpreter"
	}
}

// programNames lists the programs, sorted.
func (rt *Runtime) programNames() []string {
	names := make([]string, 0, len(rt.stats))
	for n := range rt.stats {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
