package mcs

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
)

// The layout contract: the lock word and the queue nodes are read and written
// by Go code, interpreted bytecode and compiled bytecode, each with its own
// copy of the layout (Go constants; numbers in BytecodeLock's text). For every
// pair of executors, TestLayoutContract has one hold the lock and the other
// queue behind it, and checks each state as Go decodes it: what the holder
// wrote, what the waiter wrote when it read the holder's word (the tail, its
// node's fields), and the hand-off, which works only if the waiter reads the
// grant where the holder writes it.

// holdProgram takes the lock (lockCtx's context) and returns holding it;
// releaseProgram releases it.
var (
	holdProgram    = "mov %r9, %r1" + lockCall + "\nexit\n" + BytecodeLock
	releaseProgram = "mov %r9, %r1" + unlockCall + "\nexit\n" + BytecodeLock
)

// layoutExecutor is one way of taking and releasing the lock.
type layoutExecutor struct {
	name    string
	acquire func() error
	release func() error
	node    int64 // the node index it queues with, or -1: any of its process's
}

func TestLayoutContract(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	w := newWorld(t, 4<<20)
	off := w.locks(t, 1)[0]
	mu, err := w.p.Mutex(off)
	require.NoError(t, err)
	assemble := func(src string) (*jit.Program, *interp.Program) {
		insns, err := bytecode.Assemble(src)
		require.NoError(t, err)
		jp, err := jit.Compile(insns)
		require.NoError(t, err)
		t.Cleanup(func() { jp.Close() })
		ip, err := interp.Load(insns)
		require.NoError(t, err)
		return jp, ip
	}
	holdJ, holdI := assemble(holdProgram)
	releaseJ, releaseI := assemble(releaseProgram)
	ctxFor := func(n Node) []byte { return w.lockCtx(off, n) }
	run := func(r0 uint64, err error) error {
		if err == nil && r0 != 0 {
			err = fmt.Errorf("r0 = %d", r0)
		}
		return err
	}

	jn, in := w.p.TakeNode(), w.p.TakeNode()
	defer w.p.GiveNode(jn)
	defer w.p.GiveNode(in)
	m, im := w.jitMachine(t), w.interpMachine()

	executors := []layoutExecutor{
		{name: "go", node: -1,
			acquire: func() error { mu.Lock(); return nil },
			release: func() error { mu.Unlock(); return nil }},
		{name: "jit", node: int64(jn.Index),
			acquire: func() error { return run(m.Run(holdJ, ctxFor(jn))) },
			release: func() error { return run(m.Run(releaseJ, ctxFor(jn))) }},
		{name: "interp", node: int64(in.Index),
			acquire: func() error { return run(im.Run(holdI, ctxFor(in))) },
			release: func() error { return run(im.Run(releaseI, ctxFor(in))) }},
	}
	word := func() uint64 { return atomic.LoadUint64(w.h.Uint64(off)) }
	held := held(w.p.Slot())
	for _, holder := range executors {
		for _, waiter := range executors {
			if holder.name == waiter.name {
				continue
			}
			t.Run(holder.name+"_holds_"+waiter.name+"_waits", func(t *testing.T) {
				require.Zero(t, word(), "free to begin with")
				require.NoError(t, holder.acquire())
				require.Equal(t, held, word(), "%s took the free lock: locked, owner slot, no queue", holder.name)

				waited := make(chan error, 1)
				go func() { waited <- waiter.acquire() }()
				require.Eventually(t, func() bool { return wordTail(word()) != 0 }, 10*time.Second, time.Millisecond,
					"%s never queued", waiter.name)
				tail := wordTail(word()) - 1
				if waiter.node >= 0 {
					require.Equal(t, uint32(waiter.node), tail, "the tail is %s's node", waiter.name)
				}
				n := w.p.node(tail)
				require.Equal(t, w.p.Slot()+1, atomic.LoadUint32(n.owner()), "the node names the waiter's process")
				require.Equal(t, off, atomic.LoadUint64(n.lock()), "the node names the lock by its heap offset")
				require.Contains(t, []uint32{nodeWaiting, nodeParked, nodeHead}, atomic.LoadUint32(n.state()))
				require.Equal(t, held, word()&^wordTailMask&^(wordHeadSleeping|wordWakePending),
					"the holder's bits survive the waiter's tail swap")
				select {
				case err := <-waited:
					t.Fatalf("%s took a held lock (%v)", waiter.name, err)
				case <-time.After(5 * time.Millisecond):
				}

				require.NoError(t, holder.release())
				select {
				case err := <-waited:
					require.NoError(t, err)
				case <-time.After(10 * time.Second):
					t.Fatalf("%s released, %s never got the lock: word %#x, node state %d", holder.name, waiter.name,
						word(), atomic.LoadUint32(n.state()))
				}
				require.Equal(t, held, word()&^(wordHeadSleeping|wordWakePending), "%s holds, the queue is empty", waiter.name)
				require.Equal(t, uint32(nodeFree), atomic.LoadUint32(n.state()), "the waiter's node is free again")
				require.NoError(t, waiter.release())
				require.Zero(t, word(), "free at the end")
			})
		}
	}
}
