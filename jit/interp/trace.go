//go:build kflextrace

package interp

// Built with -tags kflextrace, a Machine can show every instruction's
// registers to a test (the verifier's soundness oracle checks them against its
// analysis). Without the tag the hook compiles away: even a test of a nil
// field on every instruction cost the dispatch loop about 10%.
const tracing = true

type tracer struct {
	// Trace, if set, sees the registers before each instruction, with the
	// instruction's slot.
	Trace func(slot int, regs *[11]uint64)
}

func (t *tracer) trace(slot int, regs *[11]uint64) {
	if t.Trace != nil {
		t.Trace(slot, regs)
	}
}
