package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/mcs"
)

// The kernel form of the lock against real process deaths, on an arena shared
// with a child process: the rows of the recovery work that involve a kernel
// program, which only an arena host (or make test-kernel's VM) runs.

const roleArenaLocker = "kernel-arena-locker"

// TestArenaLockerChild is a child's body: it maps the arena it inherited as
// descriptor 3, attaches, says "ready", waits for a line on stdin, takes the
// lock at KFLEX_LOCK with the Go lock, says "held" and waits to be killed.
// Armed with a fault point (KFLEX_FAULT, builds with -tags kflexfault) it dies
// there instead.
func TestArenaLockerChild(t *testing.T) {
	if testutil.Role() != roleArenaLocker {
		t.Skip("a child of the arena recovery tests")
	}
	a, err := OpenArena(3)
	require.NoError(t, err)
	h, err := a.OpenHeap()
	require.NoError(t, err)
	p, err := mcs.Attach(h)
	require.NoError(t, err)
	m, err := p.Mutex(testutil.EnvUint(t, "KFLEX_LOCK"))
	require.NoError(t, err)
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	if err := m.Lock(); err != nil && !errors.Is(err, mcs.ErrOwnerDied) {
		fmt.Println("lock:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	time.Sleep(time.Minute)
	os.Exit(1)
}

// arenaChild is a running TestArenaLockerChild.
type arenaChild struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines *bufio.Scanner
	done  chan struct{}
}

func (w *lockWorld) startArenaChild(t *testing.T, off uint64, env ...string) *arenaChild {
	fd, err := unix.FcntlInt(uintptr(w.a.FD()), unix.F_DUPFD_CLOEXEC, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "arena")
	defer f.Close()
	cmd := testutil.Child(t, "TestArenaLockerChild", roleArenaLocker, append(env, fmt.Sprintf("KFLEX_LOCK=%d", off))...)
	cmd.ExtraFiles = []*os.File{f}
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &arenaChild{cmd: cmd, in: in, lines: bufio.NewScanner(out), done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-c.done
	})
	c.expect(t, "ready")
	return c
}

func (c *arenaChild) expect(t *testing.T, line string) {
	t.Helper()
	require.True(t, c.lines.Scan(), "the child ended before saying %q", line)
	require.Equal(t, line, c.lines.Text())
}

// proceed lets the child take the lock.
func (c *arenaChild) proceed(t *testing.T) {
	_, err := io.WriteString(c.in, "go\n")
	require.NoError(t, err)
}

func (c *arenaChild) kill(t *testing.T) {
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.done
}

// TestKernelWaiterHolderKilled: a kernel program waits for a lock whose Go
// holder, another process, is SIGKILLed. The kernel form does not take a
// lock over: it keeps timing out, and does not get a lock whose holder is
// dead. Once a Go waiter (the recovery) has taken it over with ErrOwnerDied,
// marked it consistent and released it, the kernel program takes it, runs
// its critical section and releases it; the dead slot is reaped and nothing
// is left queued.
func TestKernelWaiterHolderKilled(t *testing.T) {
	w := newLockWorld(t)
	prog := w.program(t, 20*time.Millisecond)
	off, mu := w.lockPair(t)
	n := w.p.TakeNode()
	defer w.p.GiveNode(n)
	runtime.LockOSThread() // the node is this thread's
	defer runtime.UnlockOSThread()

	c := w.startArenaChild(t, off)
	c.proceed(t)
	c.expect(t, "held")
	assert.Equal(t, int32(mcs.KernelTimedOut), run(t, prog, w.ctx(off, n)), "the holder lives: the kernel waiter times out")
	c.kill(t)
	for range 3 {
		assert.Equal(t, int32(mcs.KernelTimedOut), run(t, prog, w.ctx(off, n)),
			"the holder died: the kernel form waits for a Go party to take the lock over")
	}
	assert.Zero(t, *w.h.Uint64(off + 8), "no kernel critical section ran")

	require.ErrorIs(t, mu.Lock(), mcs.ErrOwnerDied)
	mu.Consistent()
	mu.Unlock()
	require.Zero(t, run(t, prog, w.ctx(off, n)), "recovered: the kernel program takes the lock")
	assert.Equal(t, uint64(1), *w.h.Uint64(off + 8), "its critical section ran once")
	assert.Zero(t, atomic.LoadUint64(w.h.Uint64(off)), "lock word free")
	assert.Equal(t, 1, mcs.Reap(w.h), "the dead holder's slot is given back")
	assert.Len(t, mcs.Owners(w.h), 1)
	assert.Zero(t, w.p.QueueNode(n.Index).State, "the kernel waiter's node is free")
}
