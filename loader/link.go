package loader

import (
	"fmt"
	"maps"
	"sync"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/object"
)

// Externs are the subprograms the runtime links into an ELF object's
// programs that call them by name (object.Program.Link): the bytecode
// lock's two, abi.LockFunc and abi.UnlockFunc, each cut from
// mcs.BytecodeLock, the one lock of every kflex executor. A C extension
// calls them through include/kflex.h's kflex_lock and kflex_unlock. The map
// is the caller's.
func Externs() map[string]asm.Instructions { return maps.Clone(externs()) }

var externs = sync.OnceValue(func() map[string]asm.Instructions {
	out := map[string]asm.Instructions{}
	for name, text := range map[string]string{abi.LockFunc: mcs.LockOnly(mcs.BytecodeLock), abi.UnlockFunc: mcs.UnlockOnly(mcs.BytecodeLock)} {
		insns, err := bytecode.Assemble(text)
		if err != nil {
			panic(fmt.Sprintf("loader: the bytecode lock's %s does not assemble: %v", name, err)) // kflex's own bug
		}
		out[name] = insns
	}
	return out
})

// Link is program p of an ELF object linked with the runtime's Externs,
// its globals at addr (section name → address in the executor's view).
func Link(p *object.Program, addr map[string]uint64) (asm.Instructions, error) {
	return p.Link(externs(), addr)
}
