package heap

import "time"

// SetCrashHook makes f run at every crash point (crash.go) until the test ends.
func SetCrashHook(f func(op, stage string)) { crashHook = f }

// SetStuckAfter shortens how long a waiter waits for a holder it cannot
// declare dead, and returns the function that restores it.
func SetStuckAfter(d time.Duration) func() {
	old := stuckAfter
	stuckAfter = d
	return func() { stuckAfter = old }
}
