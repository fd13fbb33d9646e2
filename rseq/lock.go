package rseq

import "runtime"

// lockThread wires the calling goroutine to its thread for good: the probe's
// throwaway thread exits with its goroutine instead of returning to the pool
// with state we changed.
func lockThread() { runtime.LockOSThread() }
