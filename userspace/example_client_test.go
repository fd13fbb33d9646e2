package userspace_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// counter is an extension: it takes the lock whose address is its argument
// (r3: the argument as an address in the heap) through the bytecode lock,
// increments the counter in the word after it and returns the new count.
var counter = `
	mov %r9, %r1
	mov %r6, %r3
	mov %r1, %r6` + serve.LockCall + `
	ldxdw %r7, [%r6+8]
	add %r7, 1
	stxdw [%r6+8], %r7
	mov %r1, %r6` + serve.UnlockCall + `
	mov %r0, %r7
	exit
` + mcs.BytecodeLock

// attachRuntime runs an extension runtime in this process, as kflex serve
// would in another, on a new 16 MiB heap with the extensions srcs (name →
// assembler text), and attaches to it at its socket as any process does
// (userspace.Dial). detach closes the client and ends the runtime.
func attachRuntime(srcs map[string]string, o serve.Options) (c *userspace.Client, detach func(), err error) {
	progs := map[string]asm.Instructions{}
	for name, src := range srcs {
		if progs[name], err = bytecode.Assemble(src); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	h, err := heap.CreateMemfd("example", &heap.Options{Params: heap.Params{Size: 16 << 20}})
	if err != nil {
		return nil, nil, err
	}
	var undo []func()
	stop := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		h.Close()
	}
	rt, err := serve.NewWith(h, progs, o)
	if err != nil {
		stop()
		return nil, nil, err
	}
	undo = append(undo, func() { rt.Close() })
	dir, err := os.MkdirTemp("", "kflex-example")
	if err != nil {
		stop()
		return nil, nil, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "sock")
	ln, err := serve.Listen(socket, nil)
	if err != nil {
		stop()
		return nil, nil, err
	}
	served := make(chan error, 1)
	go func() { served <- rt.Serve(ln) }()
	undo = append(undo, func() { ln.Close(); <-served })
	if c, err = userspace.Dial(socket, nil); err != nil {
		stop()
		return nil, nil, err
	}
	return c, func() { c.Close(); stop() }, nil
}

// ExampleClient_Invoke attaches to a runtime, allocates a lock and a counter
// in the shared heap, and increments the counter both from Go, under the
// lock, and through an extension that takes the same lock.
func ExampleClient_Invoke() {
	// The runtime would usually be kflex serve, in a process of its own.
	// Its executors: JIT: n compiles the extensions (amd64); the
	// interpreter runs them on every platform.
	c, detach, err := attachRuntime(map[string]string{"counter": counter}, serve.Options{Interpreted: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer detach()
	// A lock word and the counter after it, in the heap both share.
	obj, err := c.Alloc(16)
	if err != nil {
		fmt.Println(err)
		return
	}
	*c.Uint64(obj), *c.Uint64(obj + 8) = 0, 0
	mu, err := c.Mutex(obj)
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 3 {
		if err := mu.Lock(); err != nil {
			fmt.Println(err)
			return
		}
		*c.Uint64(obj + 8)++
		mu.Unlock()
	}
	// The extension's argument is the lock's address, in this process's
	// view: the runtime finds the same word in its own.
	n, err := c.Invoke("counter", uint64(obj))
	fmt.Println("after the extension:", n, err)
	fmt.Println("read back:", *c.Uint64(obj + 8))
	fmt.Println("lock free:", *c.Uint64(obj) == 0)
	if err := c.Free(obj); err != nil {
		fmt.Println(err)
	}
	// Output:
	// after the extension: 4 <nil>
	// read back: 4
	// lock free: true
}

// ExampleInvokeError tells an invocation's failures apart by their code.
func ExampleInvokeError() {
	c, detach, err := attachRuntime(map[string]string{
		"spin": "mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit",
	}, serve.Options{Interpreted: 1, Budget: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer detach()

	_, err = c.Invoke("nope", 0)
	fmt.Println(errors.Is(err, userspace.ErrNoSuchProgram), err)

	// The caller's context ends: the runtime cancels the run at its next
	// back-edge.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err = c.InvokeContext(ctx, "spin", 0)
	var ie *userspace.InvokeError
	if errors.As(err, &ie) {
		fmt.Println(errors.Is(err, userspace.ErrCancelled), ie.Code)
	}
	// Output:
	// true no program "nope"
	// true invocation cancelled
}
