package serve_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/sys/wire"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/rseq"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
	"github.com/kflex-go/kflex/verifier"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// counter takes the lock whose address is the argument and increments the
// counter beside it, through the bytecode lock; it returns the new count.
var counter = `
	mov %r9, %r1
	ldxdw %r1, [%r9+0]
` + serve.LockCall + `
	ldxdw %r1, [%r9+0]
	ldxdw %r7, [%r1+8]
	add %r7, 1
	stxdw [%r1+8], %r7
` + serve.UnlockCall + `
	mov %r0, %r7
	exit
` + mcs.BytecodeLock

func programs(t testing.TB) map[string]asm.Instructions {
	progs := map[string]asm.Instructions{}
	for name, src := range map[string]string{
		"add1":    "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit",
		"empty":   "mov %r0, 0\nexit",
		"counter": counter,
		"alloc":   fmt.Sprintf("ldxdw %%r1, [%%r1+0]\ncall %d\nexit", serve.HelperAlloc),
	} {
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err, name)
		progs[name] = insns
	}
	return progs
}

type fixture struct {
	h      *heap.Heap
	rt     *serve.Runtime
	socket string
	lock   uint64 // heap offset of a lock word with a counter beside it
	done   chan error
}

// arenaHeap skips the test unless the JIT and BPF arenas are there, and makes
// a heap of size bytes in a new arena, closed when the test ends. The caller
// closes the heap (startOn does), which the test's end then outlives.
func arenaHeap(t testing.TB, size uint64) (*kernel.Arena, *heap.Heap) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	testutil.Kernel(t, hostprobe.Arena, kernel.HaveArena)
	a, err := kernel.NewArena(size)
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() }) // after the fixture's cleanup, which uses it
	h, err := a.NewHeap(nil)
	require.NoError(t, err)
	return a, h
}

func start(t testing.TB) *fixture {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	return startOn(t, h, serve.Options{JIT: 2})
}

// startOn is start with heap h and options o; the fixture closes h.
func startOn(t testing.TB, h *heap.Heap, o serve.Options) *fixture {
	rt, err := serve.NewWith(h, programs(t), o)
	require.NoError(t, err)
	lock, err := h.Alloc(16)
	require.NoError(t, err)
	*h.Uint64(lock), *h.Uint64(lock + 8) = 0, 0
	f := &fixture{h: h, rt: rt, socket: filepath.Join(t.TempDir(), "sock"), lock: lock, done: make(chan error, 1)}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: f.socket, Net: "unixpacket"})
	require.NoError(t, err)
	go func() { f.done <- rt.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		<-f.done
		rt.Close()
		h.Close()
	})
	return f
}

func TestInvokeInProcess(t *testing.T) {
	f := start(t)
	r0, err := f.rt.Invoke(context.Background(), "add1", 41)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), r0)
	_, err = f.rt.Invoke(context.Background(), "nope", 0)
	assert.EqualError(t, err, `no program "nope"`)
	p, err := f.rt.Invoke(context.Background(), "alloc", 100)
	require.NoError(t, err)
	assert.Equal(t, f.h.Base(), p&^f.h.Mask(), "the helper's pointer is in the runtime's view")
	require.NoError(t, f.h.Free(p&f.h.Mask()))
}

const roleClient = "serve-client"

// TestClientsAcrossProcesses: two child processes dial the runtime, invoke the
// counter extension and take the same lock with the Go lock, at their own
// heap bases; the total is exact.
func TestClientsAcrossProcesses(t *testing.T) {
	if testutil.Role() == roleClient {
		clientChild(t)
		return
	}
	f := start(t)
	const children, rounds = 2, 2000
	var wg sync.WaitGroup
	f.clients(t, &wg, children, rounds)
	wg.Wait()
	// Each child: rounds invocations and rounds Go acquisitions.
	assert.Equal(t, uint64(children*rounds*2), *f.h.Uint64(f.lock + 8))
	assert.Zero(t, *f.h.Uint64(f.lock))
}

// TestClientsOnArena is TestClientsAcrossProcesses with the runtime's heap in
// a BPF arena: the children dial and map the arena (userspace.Dial sees the
// kind in the greeting), and a kernel thread takes the same lock through the
// lock's kernel form meanwhile.
func TestClientsOnArena(t *testing.T) {
	if testutil.Role() == roleClient {
		clientChild(t)
		return
	}
	a, h := arenaHeap(t, 8<<20)
	f := startOn(t, h, serve.Options{JIT: 2, ArenaFD: a.FD()})
	const children, rounds, kernelRounds = 2, 2000, 2000
	var wg sync.WaitGroup
	f.clients(t, &wg, children, rounds)
	done := kernelContenders(t, &wg, a, h, f.lock, 1, kernelRounds, 1)
	wg.Wait()
	done()
	assert.Equal(t, uint64(children*rounds*2+kernelRounds), *f.h.Uint64(f.lock + 8))
	assert.Zero(t, *f.h.Uint64(f.lock))
}

// clients starts n child processes (clientChild) that dial f's runtime, each
// doing rounds invocations of the counter and rounds Go acquisitions of f's
// lock; they are done when wg is.
func (f *fixture) clients(t *testing.T, wg *sync.WaitGroup, n, rounds int) {
	for range n {
		cmd := testutil.Child(t, t.Name(), roleClient, "KFLEX_SOCKET="+f.socket,
			fmt.Sprintf("KFLEX_LOCK=%d", f.lock), fmt.Sprintf("KFLEX_ROUNDS=%d", rounds))
		wg.Go(func() {
			out, err := cmd.Output()
			assert.NoError(t, err, "%s", out)
		})
	}
}

const roleIdle = "serve-idle"

// TestClientsKnown: the runtime knows each connected process by its PID (from
// the socket, held as a pidfd) and the owner-table slot it attached to, and
// forgets it when the process is killed.
func TestClientsKnown(t *testing.T) {
	if testutil.Role() == roleIdle {
		c, err := userspace.Dial(os.Getenv("KFLEX_SOCKET"), nil)
		require.NoError(t, err)
		defer c.Close()
		fmt.Println("attached")
		io.Copy(io.Discard, os.Stdin) // until the parent kills us
		return
	}
	f := start(t)
	assert.Empty(t, f.rt.Clients())
	cmd := idleClient(t, f.socket)
	clients := f.rt.Clients()
	require.Len(t, clients, 1)
	assert.Equal(t, cmd.Process.Pid, clients[0].PID)
	assert.GreaterOrEqual(t, clients[0].Slot, 0, "its owner-table slot")
	assert.True(t, clients[0].Alive)

	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	assert.Eventually(t, func() bool { return len(f.rt.Clients()) == 0 }, 10*time.Second, time.Millisecond,
		"the runtime forgets a killed process")
}

func clientChild(t *testing.T) {
	c, err := userspace.Dial(os.Getenv("KFLEX_SOCKET"), nil)
	require.NoError(t, err)
	defer c.Close()
	lockOff, rounds := testutil.EnvUint(t, "KFLEX_LOCK"), int(testutil.EnvUint(t, "KFLEX_ROUNDS"))
	r0, err := c.Invoke("add1", 1)
	require.NoError(t, err)
	require.Equal(t, uint64(2), r0)
	lockPtr := c.Base() + userspace.Ptr(lockOff)
	mu, err := c.Mutex(lockPtr)
	require.NoError(t, err)
	arg := c.Canonical(lockPtr) // the runtime's view
	var wg sync.WaitGroup
	wg.Go(func() {
		for range rounds {
			if err := mu.Lock(); err != nil {
				t.Error(err)
				return
			}
			*c.Uint64(lockPtr + 8)++
			mu.Unlock()
		}
	})
	for range rounds {
		if _, err := c.Invoke("counter", arg); err != nil {
			t.Error(err)
			break
		}
	}
	wg.Wait()
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := userspace.Dial(filepath.Join(dir, "nobody"), nil)
	assert.ErrorIs(t, err, userspace.ErrNoRuntime)

	// Something that is not a kflex runtime, or another version of one.
	for name, greeting := range map[string][]byte{
		"garbage":       []byte("HTTP/1.1 200 OK"),
		"other version": append([]byte(wire.Magic), 9, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0),
	} {
		sock := filepath.Join(dir, "fake-"+strconv.Itoa(len(greeting)))
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
		require.NoError(t, err)
		go func() {
			c, err := ln.AcceptUnix()
			if err == nil {
				c.Write(greeting)
				c.Close()
			}
		}()
		_, err = userspace.Dial(sock, nil)
		assert.ErrorIs(t, err, userspace.ErrVersion, name)
		ln.Close()
	}
}

func TestRuntimeGone(t *testing.T) {
	f := start(t)
	c, err := userspace.Dial(f.socket, nil)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Invoke("empty", 0)
	require.NoError(t, err)
	// The runtime shuts down while the client is attached.
	f.rt.Close()
	_, err = c.Invoke("empty", 0)
	assert.ErrorIs(t, err, userspace.ErrRuntimeGone)
}

// BenchmarkInvoke is a round trip from a client to the runtime and back for an
// empty extension.
func BenchmarkInvoke(b *testing.B) {
	f := start(b)
	c, err := userspace.Dial(f.socket, nil)
	require.NoError(b, err)
	defer c.Close()
	for b.Loop() {
		if _, err := c.Invoke("empty", 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/invoke")
}

// sliceProbe takes the lock whose address is its argument and reports its
// executor's slice-request byte: bits 8-15 inside the critical section, bits
// 0-7 after unlocking (2 when the executor has no rseq area). While holding
// the lock it also plays the kernel and marks the slice granted, so that the
// unlock must yield it back.
var sliceProbe = `
	mov %r9, %r1
	ldxdw %r1, [%r9+0]
` + serve.LockCall + `
	ldxdw %r1, [%r9+8]
	ldxdw %r6, [%r1+24]
	mov %r7, 0
	jeq %r6, 0, unlock
	ldxb %r7, [%r6+0]
	stb [%r6+0], 0
	stb [%r6+1], 1
unlock:
	ldxdw %r1, [%r9+0]
` + serve.UnlockCall + `
	ldxdw %r1, [%r9+8]
	ldxdw %r6, [%r1+24]
	mov %r8, 2
	jeq %r6, 0, out
	ldxb %r8, [%r6+0]
	stb [%r6+1], 0
out:
	mov %r0, %r7
	lsh %r0, 8
	or %r0, %r8
	exit
` + mcs.BytecodeLock

const roleSlice = "serve-slice"

// TestExtensionRequestsSlice: an executor thread registers rseq in the heap,
// and the bytecode lock sets the request while the extension holds the lock,
// clears it after, and yields a granted slice back. It runs in a child process
// with glibc's rseq off (this test binary is cgo, so glibc owns rseq here).
func TestExtensionRequestsSlice(t *testing.T) {
	if testutil.Role() != roleSlice {
		child := testutil.Child(t, "TestExtensionRequestsSlice", roleSlice, "GLIBC_TUNABLES=glibc.pthread.rseq=0")
		child.Stderr = nil
		out, err := child.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return
	}
	if !rseq.Probe().Rseq {
		t.Skip("skipped: no rseq system call")
	}
	f := start(t)
	insns, err := bytecode.Assemble(sliceProbe)
	require.NoError(t, err)
	rt, err := serve.New(f.h, map[string]asm.Instructions{"probe": insns}, 1, io.Discard)
	require.NoError(t, err)
	defer rt.Close()
	require.GreaterOrEqual(t, rt.SliceStatus(), rseq.Registered, "executor thread status %v", rt.SliceStatus())
	r0, err := rt.Invoke(context.Background(), "probe", f.h.Base()+f.lock)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x100), r0, "request set inside the critical section, clear after")
	assert.Equal(t, uint64(1), rt.SliceYields(), "the granted slice was yielded back")
}

func TestVerifiedAtLoad(t *testing.T) {
	f := start(t)
	bad, err := bytecode.Assemble("ldxdw %r0, [%r10-8]\nexit")
	require.NoError(t, err)
	_, err = serve.New(f.h, map[string]asm.Instructions{"bad": bad}, 1, io.Discard)
	assert.ErrorContains(t, err, "serve: program bad: insn 0: invalid read from stack off -8 size 8")
	assert.ErrorIs(t, err, verifier.ErrRejected)
	unknown, err := bytecode.Assemble("call 12345\nexit")
	require.NoError(t, err)
	_, err = serve.New(f.h, map[string]asm.Instructions{"unknown": unknown}, 1, io.Discard)
	assert.ErrorContains(t, err, "call to unknown helper 12345")
	// An extension that releases the lock on one path only.
	held, err := bytecode.Assemble("mov %r9, %r1\nldxdw %r1, [%r9+0]\n" + serve.LockCall +
		"\nldxdw %r6, [%r9+0]\njeq %r6, 0, out\nldxdw %r1, [%r9+0]\n" + serve.UnlockCall + "\nout:\nmov %r0, 0\nexit\n" + mcs.BytecodeLock)
	require.NoError(t, err)
	_, err = serve.New(f.h, map[string]asm.Instructions{"held": held}, 1, io.Discard)
	require.ErrorIs(t, err, verifier.ErrRejected)
	assert.Regexp(t, `exit with 1 lock\(s\) held|different numbers of locks`, err.Error())
	// The counter's critical section has no cancellation point; the lock's
	// own spin loops do, holding nothing in their frame.
	res, err := verifier.Verify(programs(t)["counter"], loader.Config())
	require.NoError(t, err)
	require.NotEmpty(t, res.CancelTable)
	for _, c := range res.CancelTable {
		assert.Zero(t, c.Locks, "slot %d", c.Slot)
	}
}

// TestPointerArgument: an extension reads through r3, the argument as a heap
// address, with no guard; any view's address of the object (this process's,
// or its bare offset) reaches it, on compiled and interpreting executors.
func TestPointerArgument(t *testing.T) {
	f := start(t)
	insns, err := bytecode.Assemble("ldxdw %r0, [%r3+8]\nexit")
	require.NoError(t, err)
	res, err := verifier.Verify(insns, loader.Config())
	require.NoError(t, err)
	require.Equal(t, verifier.HeapChecked, res.Access[0], "the argument needs no guard")
	*f.h.Uint64(f.lock + 8) = 77
	for _, o := range []serve.Options{{JIT: 1}, {Interpreted: 1}} {
		rt, err := serve.NewWith(f.h, map[string]asm.Instructions{"arg": insns}, o)
		require.NoError(t, err)
		for _, arg := range []uint64{f.h.Base() + f.lock, f.lock, f.h.CanonBase() + f.lock} {
			r0, err := rt.Invoke(context.Background(), "arg", arg)
			require.NoError(t, err)
			assert.Equal(t, uint64(77), r0, "%+v, argument %#x", o, arg)
		}
		rt.Close()
	}
}

// TestAllocatedObject: past its test against NULL, the object alloc returned
// is written with no guard; a failed allocation takes the NULL path.
func TestAllocatedObject(t *testing.T) {
	f := start(t)
	insns, err := bytecode.Assemble(fmt.Sprintf(`
		ldxdw %%r1, [%%r1+0]
		call %d
		jeq %%r0, 0, out
		stdw [%%r0+0], 11
		stdw [%%r0+8], 22
	out:
		exit`, serve.HelperAlloc))
	require.NoError(t, err)
	res, err := verifier.Verify(insns, loader.Config())
	require.NoError(t, err)
	assert.Equal(t, [2]verifier.Access{verifier.HeapChecked, verifier.HeapChecked}, [2]verifier.Access(res.Access[3:5]))
	for _, o := range []serve.Options{{JIT: 1}, {Interpreted: 1}} {
		rt, err := serve.NewWith(f.h, map[string]asm.Instructions{"new": insns}, o)
		require.NoError(t, err)
		p, err := rt.Invoke(context.Background(), "new", 16)
		require.NoError(t, err)
		require.NotZero(t, p)
		off := p & f.h.Mask()
		assert.Equal(t, [2]uint64{11, 22}, [2]uint64{*f.h.Uint64(off), *f.h.Uint64(off + 8)}, "%+v", o)
		require.NoError(t, f.h.Free(off))
		p, err = rt.Invoke(context.Background(), "new", 1<<40)
		require.NoError(t, err)
		assert.Zero(t, p, "%+v: the allocation fails, the program takes the NULL path", o)
		rt.Close()
	}
}
