package kernel

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/mcs"
)

// lockArgs loads mcs_lock's arguments from the context (the lock at ctx[0],
// then the node, its index + 1, the held bits and the node table at abi's
// offsets), casting the arena pointers, which arrive in the user view, as the
// kernel requires. It keeps the context in r9.
var lockArgs = fmt.Sprintf(`
	mov %%r9, %%r1
	ldxdw %%r1, [%%r9+0]
	addr_space_cast %%r1, %%r1, 1
	ldxdw %%r2, [%%r9+%d]
	addr_space_cast %%r2, %%r2, 1
	ldxdw %%r3, [%%r9+%d]
	ldxdw %%r4, [%%r9+%d]
	ldxdw %%r5, [%%r9+%d]
	addr_space_cast %%r5, %%r5, 1`, abi.CtxNode, abi.CtxNodeIndex, abi.CtxHeld, abi.CtxNodeTable)

// unlockArgs loads mcs_unlock's arguments from the context kept in r9.
var unlockArgs = fmt.Sprintf(`
	ldxdw %%r1, [%%r9+0]
	addr_space_cast %%r1, %%r1, 1
	ldxdw %%r2, [%%r9+%d]
	addr_space_cast %%r3, %%r2, 1
	ldxdw %%r2, [%%r9+%d]`, abi.CtxNode, abi.CtxHeld)

// LockProgram is what a kernel lock program does with the lock named in its
// context (LockArgs).
type LockProgram int

const (
	// LockCounter takes the lock, increments the 8-byte counter stored after
	// the lock word and releases the lock: a kernel thread's part in the tests
	// where Go code, kflex's executors and the kernel share locks.
	LockCounter LockProgram = iota
	// LockHold takes the lock and returns holding it.
	LockHold
	// LockRelease releases a lock that LockHold took.
	LockRelease
)

var lockPrograms = map[LockProgram]string{
	LockCounter: lockArgs + `
	stxdw [%r10-8], %r1
	call local mcs_lock
	jne %r0, 0, out
	ldxdw %r1, [%r10-8]
	ldxdw %r7, [%r1+8]
	add %r7, 1
	stxdw [%r1+8], %r7` + unlockArgs + `
	call local mcs_unlock
out:
	exit
`,
	LockHold:    lockArgs + "\n\tcall local mcs_lock\n\texit\n",
	LockRelease: "\tmov %r9, %r1" + unlockArgs + "\n\tcall local mcs_unlock\n\texit\n",
}

// lockSubprograms is the part of lock text lt that program what calls.
func lockSubprograms(what LockProgram, lt string) string {
	switch what {
	case LockHold:
		return mcs.LockOnly(lt)
	case LockRelease:
		return mcs.UnlockOnly(lt)
	}
	return lt
}

// KernelLocker is a syscall program that works one of the heap's MCS locks
// with the bytecode lock's kernel form (mcs.KernelLock). Run it with
// LockArgs.Context; r0 is 0 or one of mcs's Kernel* errors (the lock was not
// taken).
type KernelLocker struct{ *Program }

// LoadLockProgram loads program what for a heap in arena a, its waits bounded
// by d (mcs.KernelLockWithin).
func LoadLockProgram(a *Arena, what LockProgram, d time.Duration) (*KernelLocker, error) {
	text, ok := lockPrograms[what]
	if !ok {
		return nil, fmt.Errorf("lock program %d: no such program", what)
	}
	body, err := bytecode.Assemble(text + lockSubprograms(what, mcs.KernelLockWithin(d)))
	if err != nil {
		return nil, fmt.Errorf("lock program %d: %w", what, err)
	}
	p, err := Load(append(asm.Instructions{a.Ref(asm.R0)}, body...), Syscall, nil)
	if err != nil {
		return nil, fmt.Errorf("lock program %d: %w", what, err)
	}
	return &KernelLocker{p}, nil
}

// LockArgs are a lock program's inputs, addresses in the arena's user view.
type LockArgs struct {
	Lock  uint64   // the lock word (the counter follows it)
	Node  mcs.Node // the caller's queue node (one per thread)
	Held  uint64   // mcs.Held of the attached process's slot
	Base  uint64   // the heap's base
	Table uint64   // heap offset of the node table
}

// Context encodes a as a lock program's context.
func (a LockArgs) Context() []byte {
	return mcs.CallContext(a.Lock, a.Base, a.Node, a.Held, a.Table)
}

// Lock runs the program once on ctx and returns its result.
func (l *KernelLocker) Lock(ctx []byte) (int32, error) {
	r0, _, err := l.Run(ctx)
	return int32(r0), err
}
