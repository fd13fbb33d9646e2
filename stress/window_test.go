//go:build kflexfault

package stress

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/mcs"
)

// TestKillsInSwapWindow: every kill arms mcs's FaultSwapped in a worker (its
// next incarnation dies between its tail swap and its link) on one lock that
// the runtime's executors take too and are cancelled on: runs of unlinked
// dead nodes among cancelled executors' nodes. Nobody is stuck, nothing
// leaks. Before the fixes it found (TestBytecodeGranterSkipsToDeadSuccessor,
// TestReapKeepsUnlinkedDeadSuccessors, TestReapFollowsGranterPastSkipped,
// TestRepairFreesPastUnlinkedDeadSuccessor, TestReapEndsDeadQueueFreesHanging,
// TestDeadSuccessorFirstInQueue, TestLeaveStandsIn,
// TestReapWalkSeesGranterStep, TestDeadSuccessorSkipsStaleHead,
// TestRepairStalePrevBehind), most runs wedged the lock or leaked executors'
// nodes; the default schedule, whose kills aim there about once in eleven,
// rarely did. Until 2026-12-07 it ran only when asked: a few runs in a hundred
// still failed. Measured then, with the last four of those fixes: 495 runs,
// none failed.
func TestKillsInSwapWindow(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	const procs, kills = 4, 300
	aim := byte(slices.Index(aims, mcs.FaultSwapped))
	require.NotZero(t, aim)
	var sched []byte
	for k := range kills {
		sched = append(sched, byte(k%procs), aim, 10) // a worker, FaultSwapped, 0.2 ms
	}
	for _, seed := range []uint64{1, 3} {
		cfg := Config{Procs: procs, Threads: 4, Locks: 1, Kills: kills, Runtime: true, Seed: seed,
			Schedule: sched, Command: workerCommand(t)}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		rep, err := Run(ctx, cfg)
		cancel()
		require.NoError(t, err)
		t.Logf("%+v", rep)
		assert.Zero(t, rep.Violations)
		assert.Zero(t, rep.Stuck)
		assert.Zero(t, rep.Unaccounted)
		assert.NotZero(t, rep.KilledFault, "workers died at the fault point")
		knownBugs(t, rep)
	}
}
