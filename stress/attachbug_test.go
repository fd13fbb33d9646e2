package stress

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
)

// TestKilledInAttach is the owner slot that kflex stress left behind in a
// 10,000-kill run (seed 17: "owner slot 16 (pid 25617) still attached at the
// end", with every worker gone): a process SIGKILLed inside mcs.Attach after
// its designated thread claimed a slot (the CAS of its TID into the liveness
// word) and before set_robust_list. The kernel had no robust list to walk at
// that death, so it never set FUTEX_OWNER_DIED in the word: the slot read
// alive forever, and each such kill leaked one.
//
// Attach now registers its (empty) robust list first and claims a slot with
// the kernel's list_op_pending protocol: the slot's entry is the pending
// entry before the CAS, and stays so until it is linked into the list. The
// child here plays the designated thread's part up to the kill point, the
// CAS done and the entry not linked, as that protocol leaves it, and is
// killed; the slot must be found dead and given back. (mcs's own
// TestKilledInAttach, with -tags kflexfault, kills a child at that point
// inside the real Attach.)
func TestKilledInAttach(t *testing.T) {
	if testutil.Role() == "stress-claim" {
		claimAndWait(t)
	}
	path, h, p := attachedHeap(t)

	slot := p.Slot() + 1
	child := testutil.Child(t, "TestKilledInAttach", "stress-claim",
		"KFLEX_STRESS_HEAP="+path, fmt.Sprintf("KFLEX_STRESS_SLOT=%d", slot))
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	sc := bufio.NewScanner(out)
	require.True(t, sc.Scan())
	var tid uint32
	_, err = fmt.Sscanf(sc.Text(), "claimed %d", &tid)
	require.NoError(t, err, "child: %q", sc.Text())
	live, _ := h.OwnerLiveness(slot)
	require.Equal(t, tid, live, "the child claimed slot %d", slot)
	require.NoError(t, child.Process.Kill())
	child.Wait()

	dead := mcs.WaitDeath(h, slot, 5*time.Second)
	mcs.Reap(h)
	owners := mcs.Owners(h)
	assert.True(t, dead, "the killed process's slot is marked dead: %+v", owners)
	assert.Len(t, owners, 1, "the killed process's slot is given back: %+v", owners)
}

// claimAndWait is the "stress-claim" child: on a thread of its own it
// registers an empty robust list, claims owner slot KFLEX_STRESS_SLOT of the
// heap at KFLEX_STRESS_HEAP as mcs.Attach does (the slot's entry pending,
// then the CAS of its TID into the liveness word), says so, and waits to be
// killed before it links the entry.
func claimAndWait(t *testing.T) {
	h, err := heap.Open(os.Getenv("KFLEX_STRESS_HEAP"), nil)
	require.NoError(t, err)
	slot := uint32(testutil.EnvUint(t, "KFLEX_STRESS_SLOT"))
	runtime.LockOSThread()
	mem, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	// struct robust_list_head: next, futex_offset, list_op_pending.
	head := (*[3]uint64)(unsafe.Pointer(&mem[0]))
	head[0] = uint64(uintptr(unsafe.Pointer(head))) // empty
	head[1] = heap.OwnerLive - heap.OwnerRobust
	_, _, e := unix.RawSyscall(unix.SYS_SET_ROBUST_LIST, uintptr(unsafe.Pointer(head)), 24, 0)
	require.Zero(t, e, "set_robust_list")
	atomic.StoreUint64(&head[2], uint64(uintptr(h.At(h.OwnerRecord(slot, heap.OwnerRobust)))))
	tid := uint32(unix.Gettid())
	require.True(t, atomic.CompareAndSwapUint32(h.Uint32(h.OwnerRecord(slot, heap.OwnerLive)), 0, tid))
	fmt.Println("claimed", tid)
	time.Sleep(time.Minute)
	os.Exit(5)
}
