//go:build !kflexfault

package mcs

// FaultInjection reports whether this build kills itself at fault points.
const FaultInjection = false

func fault(string) {}
