package mcs

import "encoding/binary"

// How a program calls the bytecode lock (BytecodeLock, appended to it): the
// lock word's address in r1, and its context, kept in r9, holding what the
// lock needs besides at these offsets. A runtime's context (serve's) and the
// kernel's lock programs (kernel.LockArgs) use this layout.
const (
	CallNode      = 8  // u64: the caller's queue node's address
	CallNodeIndex = 16 // u64: its index + 1 (mcs_lock's r3)
	CallHeld      = 24 // u64: the held bits (Held) for mcs_lock and mcs_unlock
	CallNodeTable = 32 // u64: the node table's address
)

// LockCall and UnlockCall are the bytecode that calls mcs_lock and mcs_unlock
// on the lock whose address is in r1, the context in r9. They clobber r0-r5.
const (
	LockCall = `
	ldxdw %r2, [%r9+8]
	ldxdw %r3, [%r9+16]
	ldxdw %r4, [%r9+24]
	ldxdw %r5, [%r9+32]
	call local mcs_lock`
	UnlockCall = `
	ldxdw %r2, [%r9+24]
	ldxdw %r3, [%r9+8]
	call local mcs_unlock`
)

// CallContext encodes a context of this layout for node n of a heap at base,
// with first at offset 0 (where a runtime keeps its argument), the node table
// at heap offset table, and extra words after the lock's.
func CallContext(first, base uint64, n Node, held, table uint64, extra ...uint64) []byte {
	words := append([]uint64{first, base + n.Off, uint64(n.Index) + 1, held, base + table}, extra...)
	ctx := make([]byte, 8*len(words))
	for i, v := range words {
		binary.LittleEndian.PutUint64(ctx[8*i:], v)
	}
	return ctx
}
