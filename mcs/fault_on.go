//go:build kflexfault

package mcs

import (
	"os"
	"syscall"
)

// FaultInjection reports whether this build kills itself at fault points.
const FaultInjection = true

var faultAt = os.Getenv("KFLEX_FAULT")

// fault kills the process at point pt if KFLEX_FAULT names it.
func fault(pt string) {
	if pt == faultAt {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
