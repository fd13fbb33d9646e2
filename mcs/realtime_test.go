package mcs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
)

// TestRealtimeLiveness checks, with the kernel's own view of the thread, that
// the designated thread sleeps in SCHED_FIFO where the host allows it, with
// reset-on-fork, and that no other thread of the process was moved.
func TestRealtimeLiveness(t *testing.T) {
	testutil.Kernel(t, hostprobe.Realtime, nil)
	w := newWorld(t, 1<<20)
	require.True(t, w.p.RealtimeLiveness(), "the host allows SCHED_FIFO, the designated thread should use it")

	var tid uint32
	for _, o := range Owners(w.h) {
		if o.Slot == w.p.Slot() {
			tid = o.TID
		}
	}
	require.NotZero(t, tid)
	attr, err := unix.SchedGetAttr(int(tid), 0)
	require.NoError(t, err)
	assert.Equal(t, uint32(unix.SCHED_FIFO), attr.Policy)
	assert.Equal(t, uint32(1), attr.Priority)
	assert.NotZero(t, attr.Flags&unix.SCHED_FLAG_RESET_ON_FORK)

	self, err := unix.SchedGetAttr(0, 0)
	require.NoError(t, err)
	assert.Equal(t, uint32(unix.SCHED_NORMAL), self.Policy, "the test's own thread stays ordinary")
}
