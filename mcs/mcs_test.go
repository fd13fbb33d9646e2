package mcs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// world is a heap file with this process attached, and the offset of a region of
// lock words and counters allocated in it.
type world struct {
	h    *heap.Heap
	p    *Process
	path string
}

func newWorld(t testing.TB, size uint64) *world {
	t.Helper()
	path := filepath.Join(t.TempDir(), "heap")
	h, err := heap.Create(path, &heap.Options{Params: heap.Params{Size: size}})
	require.NoError(t, err)
	p, err := Attach(h)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Detach()
		h.Close()
	})
	return &world{h: h, p: p, path: path}
}

// locks allocates n lock words, each followed by a counter on its own line.
func (w *world) locks(t testing.TB, n int) []uint64 {
	t.Helper()
	offs := make([]uint64, n)
	for i := range offs {
		off, err := w.h.Alloc(64)
		require.NoError(t, err)
		*w.h.Uint64(off), *w.h.Uint64(off + 8) = 0, 0
		offs[i] = off
	}
	return offs
}

func mutex(t testing.TB, p *Process, off uint64) *Mutex {
	t.Helper()
	m, err := p.Mutex(off)
	require.NoError(t, err)
	return m
}

func TestLockUnlock(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	m := mutex(t, w.p, off)
	require.NoError(t, m.Lock())
	assert.Equal(t, held(w.p.Slot(), w.p.Gen()), *w.h.Uint64(off), "locked, owner and generation recorded")
	ok, err := m.TryLock()
	assert.False(t, ok)
	assert.NoError(t, err)
	m.Unlock()
	assert.Zero(t, *w.h.Uint64(off))
	ok, err = m.TryLock()
	assert.True(t, ok)
	assert.NoError(t, err)
	m.Unlock()
	assert.Zero(t, *w.h.Uint64(off))
}

func TestMutexBadOffset(t *testing.T) {
	w := newWorld(t, 1<<20)
	for _, off := range []uint64{0, w.h.Header().NodeOff, w.h.Header().PagesOff + 4, w.h.Size()} {
		_, err := w.p.Mutex(off)
		assert.ErrorContains(t, err, fmt.Sprintf("lock word offset %#x", off))
	}
}

func TestMisuse(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	m := mutex(t, w.p, off)
	assert.PanicsWithValue(t, "mcs: unlock of unlocked lock", m.Unlock)

	other, err := Attach(w.h) // a second owner slot, as another process would have
	require.NoError(t, err)
	defer other.Detach()
	require.NoError(t, m.Lock())
	om := mutex(t, other, off)
	assert.PanicsWithValue(t, fmt.Sprintf("mcs: unlock of lock held by owner slot %d from slot %d", w.p.Slot(), other.Slot()), om.Unlock)
	m.Unlock()
}

// hammer has each of goroutines take the locks in turn for rounds rounds and
// increment the counter beside each lock word without atomics: a lost update
// shows up as a wrong total.
func hammer(t testing.TB, p *Process, offs []uint64, goroutines, rounds int) {
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ms := make([]*Mutex, len(offs))
			for i, off := range offs {
				ms[i], _ = p.Mutex(off)
			}
			for r := range rounds {
				i := (g + r) % len(ms)
				if err := ms[i].Lock(); err != nil {
					t.Error(err)
					return
				}
				c := p.h.Uint64(offs[i] + 8)
				*c = *c + 1
				ms[i].Unlock()
			}
		})
	}
	wg.Wait()
}

func total(h *heap.Heap, offs []uint64) (n uint64) {
	for _, off := range offs {
		n += *h.Uint64(off + 8)
	}
	return n
}

func TestHammer(t *testing.T) {
	w := newWorld(t, 1<<20)
	offs := w.locks(t, 8)
	goroutines, rounds := 16, 20000
	if testing.Short() {
		goroutines, rounds = 8, 5000
	}
	hammer(t, w.p, offs, goroutines, rounds)
	assert.Equal(t, uint64(goroutines*rounds), total(w.h, offs))
	for _, off := range offs {
		assert.Zero(t, *w.h.Uint64(off), "lock word %#x left non-zero", off)
	}
}

// TestFIFO queues waiters one after another behind a held lock and checks they
// get it in queue order.
func TestFIFO(t *testing.T) {
	w := newWorld(t, 1<<20)
	off := w.locks(t, 1)[0]
	m := mutex(t, w.p, off)
	require.NoError(t, m.Lock())
	const n = 6
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		tail := wordTail(atomic.LoadUint64(m.word))
		wg.Go(func() {
			mm := mutex(t, w.p, off)
			assert.NoError(t, mm.Lock())
			order = append(order, i) // under the lock
			mm.Unlock()
		})
		// Wait until the waiter is queued (the tail moved) before starting the next.
		require.Eventually(t, func() bool { return wordTail(atomic.LoadUint64(m.word)) != tail },
			5*time.Second, 50*time.Microsecond, "waiter %d never queued", i)
	}
	m.Unlock()
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)
	assert.Zero(t, *w.h.Uint64(off))
}

const childStress = "mcs-stress"

// TestMultiProcess runs 4 child processes of 4 goroutines each, every child at
// its own heap base, incrementing counters under 8 shared locks.
func TestMultiProcess(t *testing.T) {
	if testutil.Role() == childStress {
		stressChild(t)
		return
	}
	w := newWorld(t, 4<<20)
	offs := w.locks(t, 8)
	const children, goroutines = 4, 4
	rounds := 8000 // 4 × 4 × 8000 = 128k acquisitions
	var strs []string
	for _, o := range offs {
		strs = append(strs, strconv.FormatUint(o, 10))
	}
	var cmds []*exec
	for c := range children {
		// Force each child's view onto its own base, distinct from ours.
		base := uint64(0x2000_0000_0000) + uint64(c+1)<<32
		cmd := testutil.Child(t, "TestMultiProcess", childStress,
			"KFLEX_HEAP="+w.path, "KFLEX_LOCKS="+strings.Join(strs, ","),
			fmt.Sprintf("KFLEX_BASE=%d", base), fmt.Sprintf("KFLEX_ROUNDS=%d", rounds),
			fmt.Sprintf("KFLEX_GOROUTINES=%d", goroutines))
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		cmds = append(cmds, &exec{cmd.Process, bufio.NewScanner(out), cmd.Wait})
	}
	bases := map[string]bool{fmt.Sprintf("%#x", w.h.Base()): true}
	for i, c := range cmds {
		var report string
		for c.out.Scan() {
			if line := c.out.Text(); strings.HasPrefix(line, "base ") {
				report = line
			}
		}
		require.NoError(t, c.wait(), "child %d", i)
		require.NotEmpty(t, report, "child %d reported nothing", i)
		bases[report] = true
	}
	assert.Len(t, bases, children+1, "every process had its own base: %v", bases)
	assert.Equal(t, uint64(children*goroutines*rounds), total(w.h, offs))
	for _, off := range offs {
		assert.Zero(t, *w.h.Uint64(off), "lock word %#x left non-zero", off)
	}
	assert.Len(t, Owners(w.h), 1, "children detached")
}

// childAttach opens the heap a child was given (KFLEX_HEAP) with opts and
// attaches to it, both undone when the test ends.
func childAttach(t *testing.T, opts *heap.Options) (*heap.Heap, *Process) {
	h, err := heap.Open(os.Getenv("KFLEX_HEAP"), opts)
	require.NoError(t, err)
	t.Cleanup(func() { h.Close() })
	p, err := Attach(h)
	require.NoError(t, err)
	t.Cleanup(func() { p.Detach() })
	return h, p
}

type exec struct {
	proc *os.Process
	out  *bufio.Scanner
	wait func() error
}

func stressChild(t *testing.T) {
	h, p := childAttach(t, &heap.Options{MapAt: uintptr(testutil.EnvUint(t, "KFLEX_BASE"))})
	offs := testutil.EnvUints(t, "KFLEX_LOCKS")
	hammer(t, p, offs, int(testutil.EnvUint(t, "KFLEX_GOROUTINES")), int(testutil.EnvUint(t, "KFLEX_ROUNDS")))
	fmt.Printf("base %#x\n", h.Base())
}

const childSleeper = "mcs-sleeper"

// TestKernelMarksDeath attaches a child, SIGKILLs it, and checks that the kernel
// marked its liveness word owner-died, waking us as it did.
func TestKernelMarksDeath(t *testing.T) {
	if testutil.Role() == childSleeper {
		h, err := heap.Open(os.Getenv("KFLEX_HEAP"), nil)
		require.NoError(t, err)
		p, err := Attach(h)
		require.NoError(t, err)
		fmt.Printf("slot %d\n", p.Slot())
		time.Sleep(time.Minute) // killed long before
		return
	}
	w := newWorld(t, 1<<20)
	rounds := 10
	var lat []time.Duration
	for range rounds {
		cmd := testutil.Child(t, "TestKernelMarksDeath", childSleeper, "KFLEX_HEAP="+w.path)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(out)
		require.True(t, sc.Scan(), "child printed nothing")
		var slot uint32
		_, err = fmt.Sscanf(sc.Text(), "slot %d", &slot)
		require.NoError(t, err)

		var st OwnerState
		for _, o := range Owners(w.h) {
			if o.Slot == slot {
				st = o
			}
		}
		require.Equal(t, uint32(cmd.Process.Pid), st.PID)
		require.False(t, st.Dead)

		died := make(chan time.Time, 1)
		go func() {
			WaitDeath(w.h, slot, 10*time.Second)
			died <- time.Now()
		}()
		time.Sleep(2 * time.Millisecond) // let the waiter sleep on the word
		killed := time.Now()
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		at := <-died
		cmd.Wait()
		lat = append(lat, at.Sub(killed))
		for _, o := range Owners(w.h) {
			if o.Slot == slot {
				st = o
			}
		}
		require.True(t, st.Dead, "kernel marked slot %d owner-died", slot)
	}
	t.Logf("SIGKILL -> waiter running: %v", lat)
}

func TestDetachFreesSlot(t *testing.T) {
	w := newWorld(t, 1<<20)
	n := int(w.h.Header().MaxProcs)
	var ps []*Process
	for range n - 1 {
		p, err := Attach(w.h)
		require.NoError(t, err)
		ps = append(ps, p)
	}
	_, err := Attach(w.h)
	assert.ErrorIs(t, err, ErrNoSlot)
	assert.ErrorContains(t, err, fmt.Sprintf("%d slots in use", n))
	assert.Len(t, Owners(w.h), n)
	for _, p := range ps {
		require.NoError(t, p.Detach())
	}
	assert.Len(t, Owners(w.h), 1)
	p, err := Attach(w.h)
	require.NoError(t, err)
	require.NoError(t, p.Detach())
}
