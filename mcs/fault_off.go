//go:build !kflexfault

package mcs

// FaultInjection reports whether this build kills itself at fault points.
const FaultInjection = false

func fault(string) {}

// OnFault sets what the process does at its armed fault point just before it
// kills itself; without the kflexfault tag there are no fault points.
func OnFault(func()) {}

// faultArmed is the fault point KFLEX_FAULT names: none without the tag.
func faultArmed() string { return "" }
