package abi

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// TestContextLayout: Context.Bytes puts each field at its offset, CtxFields
// tile the context, and the lock's calls read the lock's words.
func TestContextLayout(t *testing.T) {
	c := Context{Arg: 1, Node: 2, NodeIndex: 3, Held: 4, NodeTable: 5, DataLen: 6}
	b := c.Bytes()
	if len(b) != CtxSize {
		t.Fatalf("context of %d bytes, want %d", len(b), CtxSize)
	}
	for off, want := range map[int]uint64{CtxArg: 1, CtxNode: 2, CtxNodeIndex: 3, CtxHeld: 4, CtxNodeTable: 5, CtxDataLen: 6} {
		if got := binary.LittleEndian.Uint64(b[off:]); got != want {
			t.Errorf("word at %d = %d, want %d", off, got, want)
		}
	}
	end := 0
	for _, f := range CtxFields {
		if f.Off != end || f.Size != 8 {
			t.Errorf("field %s at %d (%d bytes): want the next word, at %d", f.Name, f.Off, f.Size, end)
		}
		end = f.Off + f.Size
	}
	if end != CtxSize {
		t.Errorf("fields end at %d, want %d", end, CtxSize)
	}
	for call, offs := range map[string][]int{LockCall: {CtxNode, CtxNodeIndex, CtxHeld, CtxNodeTable}, UnlockCall: {CtxHeld, CtxNode}} {
		for _, off := range offs {
			if !strings.Contains(call, fmt.Sprintf("[%%r9+%d]", off)) {
				t.Errorf("%q does not read the word at %d", call, off)
			}
		}
	}
}

// TestPrototypes: every helper has a prototype, every argument a kind.
func TestPrototypes(t *testing.T) {
	protos := Prototypes()
	for _, id := range []int32{HelperWake, HelperSliceYield, HelperRelax, HelperLockCheck, HelperAlloc, HelperFree, HelperTime, HelperCPU, HelperTrace} {
		p, ok := protos[id]
		if !ok || p.Name == "" {
			t.Errorf("helper %#x: no prototype", id)
		}
		if len(p.Args) > 5 {
			t.Errorf("helper %s: %d arguments (r1-r5)", p.Name, len(p.Args))
		}
	}
	if len(protos) != 9 {
		t.Errorf("%d prototypes, want 9", len(protos))
	}
}
