package rseq

import (
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// abiRseq mirrors struct rseq of include/uapi/linux/rseq.h (Linux 7.0).
type abiRseq struct {
	cpuIDStart uint32
	cpuID      uint32
	rseqCS     uint64
	flags      uint32
	nodeID     uint32
	mmCID      uint32
	request    uint8
	granted    uint8
	_          uint16
}

func TestABIOffsets(t *testing.T) {
	var r abiRseq
	for name, c := range map[string][2]uintptr{
		"cpu_id_start": {offCPUIDStart, unsafe.Offsetof(r.cpuIDStart)},
		"cpu_id":       {offCPUID, unsafe.Offsetof(r.cpuID)},
		"rseq_cs":      {offRseqCS, unsafe.Offsetof(r.rseqCS)},
		"flags":        {offFlags, unsafe.Offsetof(r.flags)},
		"node_id":      {offNodeID, unsafe.Offsetof(r.nodeID)},
		"mm_cid":       {offMMCID, unsafe.Offsetof(r.mmCID)},
		"request":      {offSliceReq, unsafe.Offsetof(r.request)},
		"granted":      {offSliceGrant, unsafe.Offsetof(r.granted)},
	} {
		assert.Equal(t, c[1], c[0], name)
	}
	assert.Equal(t, uintptr(origSize), unsafe.Sizeof(r), "the original 32-byte struct")
}

// glibcOff is the environment under which glibc (in cgo binaries, such as this
// test binary) leaves rseq to us.
const glibcOff = "GLIBC_TUNABLES=glibc.pthread.rseq=0"

const roleRegister = "rseq-register"

// TestRegister registers the calling thread for real. In this process (cgo,
// because testify pulls in net) glibc may own the thread's rseq, and the result
// is then Foreign; a child process run with glibc's rseq off must register.
func TestRegister(t *testing.T) {
	f := Probe()
	if !f.Rseq {
		t.Skip("skipped: no rseq system call")
	}
	if testutil.Role() == roleRegister {
		checkRegister(t, true)
		return
	}
	checkRegister(t, false)
	child := testutil.Child(t, "TestRegister", roleRegister, glibcOff)
	child.Stderr = nil
	out, err := child.CombinedOutput()
	require.NoError(t, err, "child with glibc's rseq off:\n%s", out)
}

func checkRegister(t *testing.T, mustOwn bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	th := Register()
	defer th.Unregister()
	if th.Status() == Foreign && !mustOwn {
		t.Logf("%s", th.Reason())
	} else {
		require.GreaterOrEqual(t, th.Status(), Registered, th.Reason())
		assert.Equal(t, Probe().SliceExtension, th.Status() == SliceExtension)
	}
	// Pin the thread so that the rseq cpu id and getcpu must agree.
	var old, one unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &old))
	one.Set(runtime.NumCPU() - 1)
	require.NoError(t, unix.SchedSetaffinity(0, &one))
	defer unix.SchedSetaffinity(0, &old)
	runtime.Gosched()
	var want uint32
	_, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&want)), 0, 0)
	require.Zero(t, e)
	assert.Equal(t, runtime.NumCPU()-1, int(want))
	assert.Equal(t, int(want), th.CPU(), "cpu id (from the rseq area when registered)")
	// Request and Release never fail, whatever the status.
	th.Request()
	th.Release()
	was := th.Status()
	require.NoError(t, th.Unregister())
	if was >= Registered {
		assert.Equal(t, NoRseq, th.Status())
	}
	th.Request() // after Unregister: nothing to touch
	th.Release()
	assert.Equal(t, int(want), th.CPU(), "getcpu fallback")
}

// fakeKernel stands in for the kernel's side of the protocol: it writes the
// area as the kernel would on a preemption that arrives inside a request.
type fakeKernel struct {
	area   []byte
	yields int
}

func newFakeThread(t *testing.T) (*Thread, *fakeKernel) {
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(mem) })
	k := &fakeKernel{area: mem}
	th := &Thread{size: origSize, status: SliceExtension}
	th.setArea(unsafe.Pointer(&mem[0]))
	th.yield = func() {
		k.yields++
		k.area[offSliceGrant] = 0 // the kernel ends the grant on yield
	}
	return th, k
}

// preempt is a timer interrupt: with request set, the kernel extends the slice
// (request cleared, granted set); without, it just preempts.
func (k *fakeKernel) preempt() {
	if k.area[offSliceReq] != 0 {
		k.area[offSliceReq], k.area[offSliceGrant] = 0, 1
	}
}

// revoke is the kernel refusing or ending an extension without granting:
// request cleared, nothing granted (e.g. a syscall inside the section).
func (k *fakeKernel) revoke() { k.area[offSliceReq] = 0 }

func TestSliceProtocol(t *testing.T) {
	th, k := newFakeThread(t)

	th.Request()
	assert.Equal(t, byte(1), k.area[offSliceReq], "request is set before the lock is taken")
	th.Release()
	assert.Equal(t, byte(0), k.area[offSliceReq])
	assert.Zero(t, k.yields, "no grant, no system call")

	th.Request()
	k.preempt()
	th.Release()
	assert.Equal(t, 1, k.yields, "a granted extension is yielded back")
	assert.Equal(t, uint64(1), th.Granted)
	assert.Equal(t, byte(0), k.area[offSliceGrant])

	th.Request()
	k.revoke()
	th.Release()
	assert.Equal(t, 1, k.yields, "a revoked request needs no yield")

	k.preempt() // outside any request: nothing happens
	assert.Equal(t, byte(0), k.area[offSliceGrant])
	th.Release()
	assert.Equal(t, 1, k.yields)
}

func TestNoRseqFallback(t *testing.T) {
	th := &Thread{status: NoRseq, yield: func() { t.Fatal("yield without rseq") }}
	th.Request()
	th.Release()
	assert.GreaterOrEqual(t, th.CPU(), 0)
	assert.NoError(t, th.Unregister())
	assert.Equal(t, "no rseq", th.Status().String())
}

// TestRealSliceExtension exercises the kernel's side where the host offers it.
func TestRealSliceExtension(t *testing.T) {
	testutil.Kernel(t, hostprobe.SliceExtension, HaveSliceExtension)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	th := Register()
	defer th.Unregister()
	require.Equal(t, SliceExtension, th.Status())
	assert.NotZero(t, th.Flags()&flagSliceExtEnabled, "the kernel reports the extension enabled")
	for range 1000 {
		th.Request()
		th.Release()
	}
}

func TestHaveSliceExtensionNamesWhatIsMissing(t *testing.T) {
	err := HaveSliceExtension()
	if err == nil {
		return
	}
	assert.ErrorIs(t, err, ErrNotSupported)
	assert.NotEmpty(t, Probe().SliceReason)
}
