package kernel

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/mcs"
)

// lockCounterText takes the lock at ctx[0] with the node at ctx[8] (index + 1
// at ctx[16], held bits at ctx[24], node table at ctx[32]), increments the
// 8-byte counter after the lock word and unlocks, all through mcs.KernelLock on
// the arena. It returns mcs_lock's error, or 0. Arena pointers arrive in the
// user view and are cast, as the kernel requires.
const lockCounterText = `
	mov %r9, %r1
	ldxdw %r1, [%r9+0]
	addr_space_cast %r1, %r1, 1
	ldxdw %r2, [%r9+8]
	addr_space_cast %r2, %r2, 1
	ldxdw %r3, [%r9+16]
	ldxdw %r4, [%r9+24]
	ldxdw %r5, [%r9+32]
	addr_space_cast %r5, %r5, 1
	stxdw [%r10-8], %r1
	call local mcs_lock
	jne %r0, 0, out
	ldxdw %r1, [%r10-8]
	ldxdw %r7, [%r1+8]
	add %r7, 1
	stxdw [%r1+8], %r7
	ldxdw %r2, [%r9+8]
	addr_space_cast %r3, %r2, 1
	ldxdw %r2, [%r9+24]
	call local mcs_unlock
	mov %r0, 0
out:
	exit
`

// LockCounter is a syscall program in which a kernel thread takes one of the
// heap's MCS locks with the bytecode lock's kernel form (mcs.KernelLock),
// increments the counter stored after the lock word and releases the lock: the
// kernel's part in the tests where Go code, kflex's executors and the kernel
// share locks. Run it with LockArgs.Context; r0 is 0 or one of mcs's Kernel*
// errors (the lock was not taken).
type LockCounter struct{ *Program }

// LoadLockCounter loads LockCounter for a heap in arena a.
func LoadLockCounter(a *Arena) (*LockCounter, error) {
	body, err := bytecode.Assemble(lockCounterText + mcs.KernelLock)
	if err != nil {
		return nil, fmt.Errorf("lock counter: %w", err)
	}
	p, err := Load(append(asm.Instructions{a.Ref(asm.R0)}, body...), Syscall, nil)
	if err != nil {
		return nil, fmt.Errorf("lock counter: %w", err)
	}
	return &LockCounter{p}, nil
}

// LockArgs are LockCounter's inputs, addresses in the arena's user view.
type LockArgs struct {
	Lock  uint64   // the lock word (the counter follows it)
	Node  mcs.Node // the caller's queue node (one per thread)
	Held  uint64   // mcs.Held of the attached process's slot
	Base  uint64   // the heap's base
	Table uint64   // heap offset of the node table
}

// Context encodes a as LockCounter's context.
func (a LockArgs) Context() []byte {
	words := []uint64{a.Lock, a.Base + a.Node.Off, uint64(a.Node.Index) + 1, a.Held, a.Base + a.Table}
	ctx := make([]byte, 8*len(words))
	for i, v := range words {
		binary.LittleEndian.PutUint64(ctx[8*i:], v)
	}
	return ctx
}

// Lock runs the program once on ctx and returns its result.
func (l *LockCounter) Lock(ctx []byte) (int32, error) {
	r0, _, err := l.Run(ctx)
	return int32(r0), err
}
