package mcs

import "github.com/kflex-go/kflex/abi"

// A program calls the bytecode lock (BytecodeLock, appended to it) with the
// lock word's address in r1 and a context, kept in r9, holding what the lock
// needs besides at abi's offsets (abi.CtxNode to abi.CtxNodeTable), through
// abi.LockCall and abi.UnlockCall. A runtime's context (serve's) and the
// kernel's lock programs (kernel.LockArgs) use this layout.

// CallContext encodes a context of this layout for node n of a heap at base,
// with first at offset 0 (where a runtime keeps its argument), the node table
// at heap offset table, and extra words after the lock's.
func CallContext(first, base uint64, n Node, held, table uint64, extra ...uint64) []byte {
	c := abi.Context{Arg: first, Node: base + n.Off, NodeIndex: uint64(n.Index) + 1, Held: held, NodeTable: base + table}
	return abi.EncodeWords(append(c.Words()[:abi.CtxLockEnd/8], extra...)...)
}
