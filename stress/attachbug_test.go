package stress

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

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
// word, then the PID and generation stores) and before set_robust_list. The
// kernel has no robust list to walk at that death, so it never sets
// FUTEX_OWNER_DIED in the word: the slot reads alive forever. mcs.Reap skips
// it, WaitDeath never returns true, and the slot is never given back (each
// such kill leaks one; Attach fails with ErrNoSlot once MaxProcs are gone).
// The test plays the child's part up to that point on a slot of a child that
// is then killed, and asks that the slot be found dead or freed.
func TestKilledInAttach(t *testing.T) {
	if testutil.Role() == "stress-pid" {
		fmt.Println(os.Getpid())
		time.Sleep(time.Minute)
		os.Exit(5)
	}
	t.Skip("mcs bug: a process killed inside Attach between claiming its slot and set_robust_list holds the slot forever")
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	defer h.Close()
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	defer p.Detach()

	child := testutil.Child(t, "TestKilledInAttach", "stress-pid")
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	sc := bufio.NewScanner(out)
	require.True(t, sc.Scan())
	var pid uint32
	_, err = fmt.Sscanf(sc.Text(), "%d", &pid)
	require.NoError(t, err)

	// What the child's Attach did before the SIGKILL: claim a slot with its
	// (main thread's) TID, record its PID, bump the generation.
	slot := p.Slot() + 1
	require.True(t, atomic.CompareAndSwapUint32(h.Uint32(h.OwnerRecord(slot, heap.OwnerLive)), 0, pid))
	atomic.StoreUint32(h.Uint32(h.OwnerRecord(slot, heap.OwnerPID)), pid)
	atomic.AddUint32(h.Uint32(h.OwnerRecord(slot, heap.OwnerGen)), 1)
	require.NoError(t, child.Process.Kill())
	child.Wait()

	dead := mcs.WaitDeath(h, slot, time.Second)
	mcs.Reap(h)
	owners := mcs.Owners(h)
	assert.True(t, dead || len(owners) == 1, "the killed process's slot is found dead or given back: %+v", owners)
}
