package stress

import (
	"context"
	"fmt"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/jit"
)

// FuzzCrossProcess decodes its input into a small stress run and carries it
// out for real: Run with 2-3 worker processes of 1-3 goroutines on 1-3 locks
// (lock, check or repair, update, unlock, alloc, publish into a list, unlink,
// free), with or without the extension runtime in this process (JIT and
// interpreter executors invoked on the same locks and cancelled), 1-20 kills,
// the holder's window, the list's cap and the seed from the input, and the
// rest of the input as Config.Schedule: the parent's kill choices (which
// worker, whether to wait for it to hold, wait, allocate or nothing, and
// under -tags kflexfault an mcs fault point its next incarnation dies at,
// such as the window between the tail swap and the link; then the pause),
// byte by byte, before the seed takes over. Any violation, stuck waiter,
// leak, unexplained exit or problem of the Report fails it.
//
// Why not a script of single operations: the interesting states (a holder
// killed between the pair's increments, a waiter killed behind a dead head,
// an allocation orphaned between Alloc's return and its publication) come
// from concurrent processes and the OS's timing, which no byte stream
// controls; a schedule of lock, alloc and free steps executed one at a time
// would never contend. So the input shapes the run and aims its kills, the
// workers' own loops make the operations, and Run's checks (invariants after
// every recovery and at the end, the liveness bound, the allocator, node and
// slot tables) are the oracle. The same input can take different paths:
// where the signal lands is the scheduler's. The only processes killed are
// Run's workers, children of the fuzz worker, never the fuzz worker itself.
// A run takes about a second (kills are few, Run's context ends at 10 s and
// its stop is bounded by the liveness bound); failing inputs land in
// testdata/fuzz/FuzzCrossProcess, which plain go test replays. A run that
// outlasts fuzzHang waits on something forever, which Run cannot report:
// the process panics with every goroutine's stack, and the fuzzer keeps the
// input as a crasher (go test -fuzz sets no timeout of its own).
//
//	go test -run '^$' -fuzz '^FuzzCrossProcess$' -fuzztime 5m ./stress
//	go test -tags kflexfault -run '^$' -fuzz '^FuzzCrossProcess$' ./stress  # with fault points
func FuzzCrossProcess(f *testing.F) {
	// procs, threads, locks, kills, window, list cap, runtime, seed, schedule
	f.Add(uint8(0), uint8(0), uint8(0), uint8(5), uint16(200), uint8(4), false, uint64(1), []byte{})
	f.Add(uint8(1), uint8(2), uint8(1), uint8(12), uint16(2000), uint8(15), true, uint64(17),
		[]byte{0, 2, 255, 1, 2, 0, 2, 1, 128, 0, 3, 40, 1, 0, 0})
	f.Add(uint8(0), uint8(1), uint8(0), uint8(19), uint16(50), uint8(0), true, uint64(3),
		[]byte{1, 1, 10, 0, 1, 10, 1, 2, 10, 0, 2, 10, 1, 4, 0, 0, 5, 0, 1, 6, 0, 0, 7, 0})
	f.Fuzz(func(t *testing.T, procs, threads, locks, kills uint8, window uint16, listCap uint8, rt bool, seed uint64, schedule []byte) {
		cfg := Config{
			Procs:    2 + int(procs)%2,
			Threads:  1 + int(threads)%3,
			Locks:    1 + int(locks)%3,
			Kills:    1 + int(kills)%20,
			Window:   1 + int(window)%5000,
			ListCap:  1 + int(listCap)%16,
			Runtime:  rt && jit.Supported() == nil,
			Seed:     seed | 1, // 0 would pick one
			Schedule: schedule,
			Command:  workerCommand(t),
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		run := fmt.Sprintf("%d procs x %d goroutines, %d locks, %d kills, runtime %v, seed %d, schedule %v",
			cfg.Procs, cfg.Threads, cfg.Locks, cfg.Kills, cfg.Runtime, cfg.Seed, schedule)
		watchdog := time.AfterFunc(fuzzHang, func() {
			debug.SetTraceback("all")
			panic(fmt.Sprintf("FuzzCrossProcess: %s: still running after %v", run, fuzzHang))
		})
		defer watchdog.Stop()
		rep, err := Run(ctx, cfg)
		require.NoError(t, err)
		t.Logf("%+v", rep)
		if rep.Failed() {
			for _, p := range rep.Problems {
				t.Errorf("problem: %s", p)
			}
			t.Fatalf("%s: %d violations, %d stuck, %d leaked (objects %d, nodes %d, slots %d), %d unaccounted",
				run, rep.Violations, rep.Stuck, rep.Leaked, rep.LeakedObjects, rep.LeakedNodes, rep.LeakedSlots, rep.Unaccounted)
		}
	})
}

// fuzzHang bounds one FuzzCrossProcess run: Run's own bounds (10 s of kills,
// the stop's liveness bound plus 5 s, the runtime's stop) with room to spare
// on a loaded machine.
const fuzzHang = time.Minute
