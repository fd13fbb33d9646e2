package heap_test

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
)

// The tests here kill attached processes inside the allocator and check that
// the survivors find it whole. They are an external test package because a
// process needs mcs.Attach to have an owner slot the kernel marks at death.

const (
	childKill  = "heap-kill"
	childStray = "heap-stray"
)

// stages are the crash points inside every logged step, in order (crash.go).
var stages = []string{"locked", "logged", "committed", "applying", "applied", "cleared"}

// TestAllocatorKill kills a child at each crash point of each critical section
// (page run alloc and free, slab, refill, flush, a survivor's drain of a dead
// cache, and the allocation and free of a process that found no cache slot), then checks that this process allocates large and small objects,
// that Check finds the heap consistent, and that the live objects are exactly
// the child's plus whatever its killed step completed (from the commit on, the
// step happens; before, it does not).
func TestAllocatorKill(t *testing.T) {
	switch testutil.Role() {
	case childKill:
		killChild(t)
		return
	case childStray:
		strayChild(t)
		return
	}
	// delta is what the step, once committed, changes in the live objects.
	// A slab is taken under two locks (the class's, then the pages'): the
	// survivor comes to them either way round, through the page lock first
	// (a large allocation) or through the class lock (a small one).
	ops := []struct {
		name, op   string
		delta      int
		smallFirst bool
	}{{"large", "large", 1, false}, {"unlarge", "unlarge", -1, false}, {"slab", "slab", 0, false},
		{"slab-class-first", "slab", 0, true}, {"refill", "refill", 0, false}, {"flush", "flush", 0, false},
		{"drain", "drain", 0, false}, {"direct-alloc", "direct-alloc", 1, false},
		{"direct-free", "direct-free", -1, false}}
	for _, o := range ops {
		for _, stage := range stages {
			t.Run(o.name+"/"+stage, func(t *testing.T) {
				delta := 0
				if stage != "locked" && stage != "logged" {
					delta = o.delta
				}
				killAt(t, o.op, stage, delta, o.smallFirst)
			})
		}
	}
}

// attachedHeap creates a heap of size and attaches this process to it until
// the test ends.
func attachedHeap(t *testing.T, params heap.Params) (*heap.Heap, string) {
	path := filepath.Join(t.TempDir(), "heap")
	h, err := heap.Create(path, &heap.Options{Params: params})
	require.NoError(t, err)
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Detach()
		h.Close()
	})
	return h, path
}

func killAt(t *testing.T, op, stage string, delta int, smallFirst bool) {
	params := heap.Params{Size: 4 << 20}
	direct := strings.HasPrefix(op, "direct-")
	if direct {
		params.Caches = 1
	}
	h, path := attachedHeap(t, params)
	if direct {
		// This process takes the one cache slot: the child has none.
		off, err := h.Alloc(64)
		require.NoError(t, err)
		require.NoError(t, h.Free(off))
	}
	stray := 0
	if op == "drain" {
		// A process dies holding cached objects; the crashing child is killed
		// while it drains them.
		stray = runStray(t, "TestAllocatorKill", childStray, path)
	}
	cmd := testutil.Child(t, "TestAllocatorKill", childKill, "KFLEX_HEAP="+path, "KFLEX_OP="+op, "KFLEX_STAGE="+stage)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	live, last := -1, ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		last = sc.Text()
		fmt.Sscanf(last, "live %d", &live)
	}
	requireKilled(t, cmd, last)
	require.GreaterOrEqual(t, live, 0, "child reported nothing")

	if smallFirst {
		allocBoth(t, h, 256, 64, 3*heap.PageSize)
	} else {
		allocBoth(t, h)
	}
	reapAndCheck(t, h, stray+live+delta)
	rep, err := h.Inspect()
	require.NoError(t, err)
	takeovers := uint64(0)
	for _, l := range rep.Locks {
		assert.False(t, l.Held, "%s lock still held", l.Name)
		takeovers += l.Takeovers
	}
	assert.NotZero(t, takeovers, "the child died holding a lock; nobody took it over")
}

// reapAndCheck reaps what dead processes left and checks that no dead cache
// slot nor stranded object is left, that live objects are live, and that
// Check passes.
func reapAndCheck(t *testing.T, h *heap.Heap, live int) {
	t.Helper()
	st, err := h.Reap()
	require.NoError(t, err)
	s := h.Stats()
	assert.Zero(t, s.DeadCaches, "dead cache slots left")
	assert.Zero(t, s.Stranded, "objects stranded in dead caches")
	assert.Equal(t, uint64(live), s.LiveObjects)
	sum, err := h.Check()
	require.NoError(t, err)
	t.Logf("reaped %+v; %s", st, sum)
}

// requireKilled waits for cmd and requires that SIGKILL ended it.
func requireKilled(t *testing.T, cmd *exec.Cmd, last string) {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "child exited: %v (last line %q)", err, last)
	ws := ee.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "child: %v (last line %q)", err, last)
}

// allocBoth allocates and frees a large object and a small one of each class
// the kill tests use (or the sizes given, in their order), within a time bound:
// whatever lock the child held is taken over on the way.
func allocBoth(t *testing.T, h *heap.Heap, sizes ...uint64) {
	t.Helper()
	if len(sizes) == 0 {
		sizes = []uint64{3 * heap.PageSize, 64, 256}
	}
	done := make(chan error, 1)
	go func() {
		var err error
		for _, size := range sizes {
			var off uint64
			if off, err = h.Alloc(size); err == nil {
				err = h.Free(off)
			}
			if err != nil {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("allocation hangs after the kill")
	}
}

// runStray runs test's child in role, which allocates, leaves objects in its
// cache and reports the objects it holds, and kills it; it returns that count.
func runStray(t *testing.T, test, role, path string) int {
	cmd := testutil.Child(t, test, role, "KFLEX_HEAP="+path)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(out)
	require.True(t, sc.Scan(), "stray child printed nothing")
	var live int
	_, err = fmt.Sscanf(sc.Text(), "live %d", &live)
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	requireKilled(t, cmd, sc.Text())
	return live
}

func openAttached(t *testing.T) (*heap.Heap, *mcs.Process) {
	h, err := heap.Open(os.Getenv("KFLEX_HEAP"), nil)
	require.NoError(t, err)
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	return h, p
}

// alloc64 allocates n objects of 64 bytes.
func alloc64(t *testing.T, h *heap.Heap, n int) []uint64 {
	offs := make([]uint64, n)
	for i := range offs {
		off, err := h.Alloc(64)
		require.NoError(t, err)
		offs[i] = off
	}
	return offs
}

// strayChild allocates 40 objects of 64 bytes and frees 10, so that its cache
// holds some, and waits to be killed.
func strayChild(t *testing.T) {
	h, _ := openAttached(t)
	offs := alloc64(t, h, 40)
	for _, off := range offs[:10] {
		require.NoError(t, h.Free(off))
	}
	fmt.Printf("live %d\n", len(offs)-10)
	time.Sleep(time.Minute)
}

// killChild holds 100 small objects and one large one, then does what reaches
// KFLEX_OP's critical section with the crash hook armed at KFLEX_STAGE, printing
// the objects it holds before each step. The hook kills it there.
func killChild(t *testing.T) {
	op, stage := os.Getenv("KFLEX_OP"), os.Getenv("KFLEX_STAGE")
	var armed atomic.Bool
	heap.SetCrashHook(func(o, s string) {
		if armed.Load() && o == op && s == stage {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute)
		}
	})
	if op == "drain" {
		armed.Store(true) // attaching reaps the stray child's cache
		fmt.Println("live 0")
		openAttached(t)
		t.Fatal("attach drained no dead cache")
	}
	h, _ := openAttached(t)
	small := alloc64(t, h, 100)
	large, err := h.Alloc(3 * heap.PageSize)
	require.NoError(t, err)
	live := len(small) + 1
	fmt.Printf("live %d\n", live)
	armed.Store(true)
	switch op {
	case "large":
		_, err = h.Alloc(5 * heap.PageSize)
	case "unlarge":
		err = h.Free(large)
	case "direct-alloc":
		_, err = h.Alloc(64)
	case "direct-free":
		err = h.Free(small[0])
	case "slab", "refill":
		_, err = h.Alloc(256) // a class not used yet: its first refill takes a slab
	case "flush":
		for _, off := range small {
			if err = h.Free(off); err != nil {
				break
			}
			live--
			fmt.Printf("live %d\n", live)
		}
	}
	require.NoError(t, err)
	t.Fatalf("%s/%s never reached", op, stage)
}

const childAllocator = "heap-allocator"

// TestKillsStrandNothing kills 16 attached processes that allocated and freed
// (their caches hold objects) and checks that, once a survivor reaps, no
// object is left in a dead process's cache and every object the children did
// not free is still live.
func TestKillsStrandNothing(t *testing.T) {
	if testutil.Role() == childAllocator {
		strayChild(t)
		return
	}
	h, path := attachedHeap(t, heap.Params{Size: 16 << 20})
	live := 0
	for range 16 {
		live += runStray(t, "TestKillsStrandNothing", childAllocator, path)
	}
	before := h.Stats()
	t.Logf("after 16 kills: %d live, %d stranded in %d dead cache slots",
		before.LiveObjects, before.Stranded, before.DeadCaches)
	reapAndCheck(t, h, live)
	for _, c := range h.Stats().Classes {
		assert.Zero(t, c.Cached, "%d-byte objects cached", c.Size)
	}
}

const childHammer = "heap-hammer"

// TestAllocatorRandomKills kills processes that allocate and free objects of
// mixed sizes (small, and large page runs) as fast as they can, at random
// moments, two at a time, and then checks that this process allocates, that
// Reap leaves no dead cache and that Check passes: wherever each one died, in
// a critical section or on a fast path, the heap is whole.
func TestAllocatorRandomKills(t *testing.T) {
	if testutil.Role() == childHammer {
		hammerChild(t)
		return
	}
	h, path := attachedHeap(t, heap.Params{Size: 8 << 20})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	var running []*exec.Cmd
	start := func() {
		cmd := testutil.Child(t, "TestAllocatorRandomKills", childHammer, "KFLEX_HEAP="+path)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		require.True(t, bufio.NewScanner(out).Scan(), "child printed nothing")
		running = append(running, cmd)
	}
	start()
	for range rounds {
		start()
		time.Sleep(time.Duration(2+rng.IntN(20)) * time.Millisecond)
		victim := running[0]
		running = running[1:]
		require.NoError(t, victim.Process.Signal(syscall.SIGKILL))
		requireKilled(t, victim, "")
	}
	for _, cmd := range running {
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		requireKilled(t, cmd, "")
	}
	allocBoth(t, h)
	_, err := h.Reap()
	require.NoError(t, err)
	s := h.Stats()
	assert.Zero(t, s.DeadCaches)
	assert.Zero(t, s.Stranded)
	sum, err := h.Check()
	require.NoError(t, err)
	t.Log(sum)
}

// hammerChild allocates and frees objects of random sizes, keeping at most 64,
// until it is killed.
func hammerChild(t *testing.T) {
	h, _ := openAttached(t)
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 2))
	var live []uint64
	fmt.Println("running")
	for {
		if len(live) > 0 && (rng.IntN(2) == 0 || len(live) >= 64) {
			i := rng.IntN(len(live))
			require.NoError(t, h.Free(live[i]))
			live[i] = live[len(live)-1]
			live = live[:len(live)-1]
			continue
		}
		size := uint64(8 + rng.IntN(1000))
		if rng.IntN(20) == 0 {
			size = uint64(heap.MaxSmall + rng.IntN(4*heap.PageSize))
		}
		off, err := h.Alloc(size)
		require.NoError(t, err)
		live = append(live, off)
	}
}
