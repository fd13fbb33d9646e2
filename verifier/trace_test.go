//go:build kflextrace

package verifier

import "github.com/kflex-go/kflex/jit/interp"

// registerOracle: the interpreter shows each instruction's registers
// (interp's trace.go), and soundness checks them against the analysis.
const registerOracle = true

func traceRegisters(m *interp.Machine, check func(slot int, regs *[11]uint64)) { m.Trace = check }
