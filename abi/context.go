package abi

import (
	"encoding/binary"
	"fmt"
)

// The context an extension gets in r1 (RegCtx): the invoker's argument, then
// what the bytecode lock needs, all addresses in the executor's view. Every
// field is a little-endian u64, read-only to the extension (the runtime fills
// the context for every run).
const (
	CtxArg       = 0  // the invoker's argument (also in r3, as a heap address: RegArg)
	CtxNode      = 8  // the executor's queue node's address
	CtxNodeIndex = 16 // its index + 1 (mcs_lock's r3)
	CtxHeld      = 24 // the held bits (mcs.Held) for mcs_lock and mcs_unlock
	CtxNodeTable = 32 // the node table's address
	// CtxLockEnd ends the words the bytecode lock reads: a program of its
	// own (kernel.LockArgs) may put other words after it.
	CtxLockEnd = 40
	CtxDataLen = 40 // bytes of data at the argument (a datagram), else 0
	CtxSize    = 48
)

// Field is one field of the context's layout.
type Field struct {
	Name      string
	Off, Size int
	Writable  bool
}

// CtxFields is the context's layout: whole words, none writable (an
// extension that wants scratch space has its stack and the heap).
var CtxFields = []Field{
	{Name: "arg", Off: CtxArg, Size: 8}, {Name: "node", Off: CtxNode, Size: 8},
	{Name: "node_index", Off: CtxNodeIndex, Size: 8}, {Name: "held", Off: CtxHeld, Size: 8},
	{Name: "node_table", Off: CtxNodeTable, Size: 8}, {Name: "data_len", Off: CtxDataLen, Size: 8},
}

// Context is a context's contents, field by field.
type Context struct {
	Arg, Node, NodeIndex, Held, NodeTable, DataLen uint64
}

// Words are the context's words in layout order.
func (c Context) Words() []uint64 {
	return []uint64{CtxArg / 8: c.Arg, CtxNode / 8: c.Node, CtxNodeIndex / 8: c.NodeIndex,
		CtxHeld / 8: c.Held, CtxNodeTable / 8: c.NodeTable, CtxDataLen / 8: c.DataLen}
}

// Bytes encodes c: CtxSize bytes.
func (c Context) Bytes() []byte { return EncodeWords(c.Words()...) }

// EncodeWords encodes little-endian u64 words, a context's form.
func EncodeWords(words ...uint64) []byte {
	b := make([]byte, 8*len(words))
	for i, v := range words {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// The subprograms of the bytecode lock (mcs.BytecodeLock), by name: the
// verifier counts the locks a program holds through them. C extensions call
// them through include/kflex.h's kflex_lock and kflex_unlock, and the loader
// links them in (loader.Externs).
const (
	LockFunc   = "mcs_lock"
	UnlockFunc = "mcs_unlock"
)

// LockCall and UnlockCall are the bytecode (in bytecode.Assemble's syntax) an
// extension uses to call the bytecode lock (appended to its program) on the
// lock whose address is in r1, with the context kept in r9. They clobber
// r0-r5.
var (
	LockCall = fmt.Sprintf(`
	ldxdw %%r2, [%%r9+%d]
	ldxdw %%r3, [%%r9+%d]
	ldxdw %%r4, [%%r9+%d]
	ldxdw %%r5, [%%r9+%d]
	call local %s`, CtxNode, CtxNodeIndex, CtxHeld, CtxNodeTable, LockFunc)
	UnlockCall = fmt.Sprintf(`
	ldxdw %%r2, [%%r9+%d]
	ldxdw %%r3, [%%r9+%d]
	call local %s`, CtxHeld, CtxNode, UnlockFunc)
)
