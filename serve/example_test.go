package serve_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/cancel"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// newRuntime is a runtime on a new 16 MiB heap (a memfd), running the
// extensions srcs (name → kflex assembler text) on executors as o says. A
// program the verifier rejects is an error wrapping a *verifier.Error.
// closeAll closes the runtime, then the heap.
func newRuntime(srcs map[string]string, o serve.Options) (rt *serve.Runtime, h *heap.Heap, closeAll func(), err error) {
	progs := map[string]asm.Instructions{}
	for name, src := range srcs {
		if progs[name], err = bytecode.Assemble(src); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if h, err = heap.CreateMemfd("example", &heap.Options{Params: heap.Params{Size: 16 << 20}}); err != nil {
		return nil, nil, nil, err
	}
	if rt, err = serve.NewWith(h, progs, o); err != nil {
		h.Close()
		return nil, nil, nil, err
	}
	return rt, h, func() { rt.Close(); h.Close() }, nil
}

// ExampleRuntime_Invoke loads extensions into a runtime on a new heap and
// invokes them from this process: one reads its argument, one allocates in
// the heap through a helper, one runs past its time budget.
func ExampleRuntime_Invoke() {
	// One interpreting executor (every platform); JIT: n compiles (amd64).
	rt, h, closeAll, err := newRuntime(map[string]string{
		// r1 is the context: its first word is the argument (abi.CtxArg).
		"add1": "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit",
		// r0: 32 bytes from the heap's allocator, at an address in the
		// runtime's view of the heap.
		"alloc": fmt.Sprintf("mov %%r1, 32\ncall %d\nexit", serve.HelperAlloc),
		"spin":  "mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit",
	}, serve.Options{Interpreted: 1, Budget: 10 * time.Millisecond})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll()
	ctx := context.Background()

	r0, err := rt.Invoke(ctx, "add1", 41)
	fmt.Println(r0, err)

	p, err := rt.Invoke(ctx, "alloc", 0)
	fmt.Println("allocated in the heap:", err == nil && p&^h.Mask() == h.Base())
	h.Free(p & h.Mask()) // the extension published it: now it is ours

	_, err = rt.Invoke(ctx, "spin", 0)
	var ce *cancel.Error
	if errors.As(err, &ce) {
		fmt.Println(errors.Is(err, abi.ErrCancelled), ce.Cause)
	}

	_, err = rt.Invoke(ctx, "nope", 0)
	fmt.Println(errors.Is(err, serve.ErrNoProgram), err)
	// Output:
	// 42 <nil>
	// allocated in the heap: true
	// true its time budget ran out
	// true no program "nope"
}

// ExampleRuntime_Serve serves a runtime's extensions to processes that
// attach at a unix socket, as kflex serve does; here the process attached is
// this one.
func ExampleRuntime_Serve() {
	rt, h, closeAll, err := newRuntime(map[string]string{"add1": "ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit"}, serve.Options{Interpreted: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer closeAll()
	dir, err := os.MkdirTemp("", "kflex-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	ln, err := serve.Listen(filepath.Join(dir, "sock"), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ln) }()

	c, err := userspace.Dial(filepath.Join(dir, "sock"), nil)
	if err != nil {
		fmt.Println(err)
	} else {
		r0, err := c.Invoke("add1", 1)
		fmt.Println(r0, err)
		fmt.Println("the same heap:", c.Size() == h.Size())
		c.Close()
	}
	ln.Close() // Serve returns nil once its listener is closed
	fmt.Println(<-served)
	// Output:
	// 2 <nil>
	// the same heap: true
	// <nil>
}
