package mcs

import (
	"runtime"
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

// TestLeaveRealtimeUnprivileged: a thread that entered SCHED_FIFO and then
// lost CAP_SYS_NICE (or had only an RLIMIT_RTPRIO) still gets back to its
// policy: leaveRealtime keeps RESET_ON_FORK, which such a thread may not clear.
func TestLeaveRealtimeUnprivileged(t *testing.T) {
	testutil.Kernel(t, hostprobe.Realtime, nil)
	errc := make(chan error)
	var policy uint32
	go func() {
		runtime.LockOSThread() // never unlocked: the thread, its capabilities changed, exits with the goroutine
		before, err := enterRealtime()
		if err != nil {
			errc <- err
			return
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_NICE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		if err := leaveRealtime(before); err != nil {
			errc <- err
			return
		}
		attr, err := unix.SchedGetAttr(0, 0)
		if err == nil {
			policy = attr.Policy
		}
		errc <- err
	}()
	require.NoError(t, <-errc)
	assert.Equal(t, uint32(unix.SCHED_NORMAL), policy, "back to SCHED_NORMAL without CAP_SYS_NICE")
}
