package stress

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestRuntimeInTheRun runs the harness with the extension runtime in the
// parent (Config.Runtime): its JIT and interpreter executors take the same
// locks, and a canceller cancels them at random. Skipped until the harness's
// extension is rewritten: it reloads the lock's address from its context for
// each lock call and keeps it in no callee-saved register, so a cancellation
// in its window loop could not release the lock (the table names no register
// for it); the lock then stayed held by the runtime's slot for good, every
// waiter queued behind it, and cancelled executors' nodes piled up abandoned
// (136, seen with kflex heap info). The verifier now rejects such a program
// (verifier.releasable), so this run fails at its start until the extension
// keeps the address in r6-r9 while it holds the lock. Reproduce with
// KFLEX_TRY=1 (KFLEX_TRY_HEAP=PATH keeps the heap for kflex heap info).
func TestRuntimeInTheRun(t *testing.T) {
	if os.Getenv("KFLEX_TRY") == "" {
		t.Skip("the harness's extension keeps its lock address in no callee-saved register (see the comment)")
	}
	cfg := Config{Procs: 2, Threads: 2, Locks: 2, Kills: 50, Runtime: true, Command: workerCommand(t), HeapPath: os.Getenv("KFLEX_TRY_HEAP")}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	knownBugs(t, rep)
	if rep.Cancellations == 0 {
		t.Error("no invocation was cancelled")
	}
}
