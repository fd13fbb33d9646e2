package jit

// enter runs generated code from the execution context at ctx until it exits.
func enter(ctx uintptr)
