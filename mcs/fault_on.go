//go:build kflexfault

package mcs

import (
	"os"
	"runtime"
	"syscall"
)

// FaultInjection reports whether this build kills itself at fault points.
const FaultInjection = true

var (
	faultAt = os.Getenv("KFLEX_FAULT")
	// faultStop: KFLEX_FAULT_ACTION=stop freezes the process at the point
	// instead (SIGSTOP); it goes on from there when it gets SIGCONT.
	faultStop = os.Getenv("KFLEX_FAULT_ACTION") == FaultActionStop
	onFault   func()
)

// OnFault sets what the process does at its armed fault point just before it
// kills itself: a harness that also kills it from outside marks there which
// death it was. Set it before the process can reach the point.
func OnFault(f func()) { onFault = f }

// fault kills (or stops) the process at point pt if KFLEX_FAULT names it.
func fault(pt string) {
	if pt != faultAt {
		return
	}
	if faultStop {
		// At this thread, so that it stops before its next instruction.
		runtime.LockOSThread()
		syscall.Tgkill(os.Getpid(), syscall.Gettid(), syscall.SIGSTOP)
		runtime.UnlockOSThread()
		return
	}
	if onFault != nil {
		onFault()
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// faultArmed is the fault point KFLEX_FAULT names.
func faultArmed() string { return faultAt }
