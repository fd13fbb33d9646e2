package heap

// Crash points name places inside the allocator's critical sections where a test
// kills the process, to show that the next holder finishes the work (the
// TestAllocatorKill children set the hook; see SetCrashHook in export_test.go).
// op names the critical section: "large", "slab", "unlarge", "refill", "flush",
// "direct-alloc", "direct-free", "drain"; stage the point in it: "locked"
// (the change computed, nothing logged), "logged", "committed", "applying",
// "applied", "cleared" (the log cleared, the lock not yet released).
//
// Production never sets the hook: what it costs there is one load and a branch
// per critical section, none on the allocation fast path.
var crashHook func(op, stage string)

func crash(op, stage string) {
	if crashHook != nil {
		crashHook(op, stage)
	}
}
