//go:build !kflextrace

package verifier

import "github.com/kflex-go/kflex/jit/interp"

// registerOracle is off: the interpreter is built without its trace hook
// (build with -tags kflextrace; see trace_test.go).
const registerOracle = false

func traceRegisters(*interp.Machine, func(int, *[11]uint64)) {}
