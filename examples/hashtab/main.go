// Command hashtab is the Go side of a C extension: a hash table in kflex's
// heap under per-bucket locks. bpf/hashtab.c is the extension:
// programs put, get and del, each taking a request (key, value) in the heap;
// the table is its global variable "table", which lives in the heap too.
// This client attaches to a runtime serving it, finds the table by name,
// fills it from several goroutines at once through the extension, reads it
// back, and then walks it from Go, taking each bucket's lock, the same MCS
// lock the extension takes (include/kflex.h's kflex_lock).
//
//	make examples        # bin/examples/hashtab.o, built with clang-19
//	bin/kflex serve --socket /tmp/kflex.sock bin/examples/hashtab.o &
//	go run ./examples/hashtab --socket /tmp/kflex.sock
//
// hashtab_test.go runs the same against a runtime in the test process.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/userspace"
)

// The C side's structures (bpf/hashtab.c), as Go reads them. Pointers in the
// heap are in the runtime's view: userspace's LoadPtr and Local convert them.
type (
	request struct{ key, value uint64 }
	entry   struct{ key, value, next uint64 }
	bucket  struct{ lock, head uint64 }
	table   struct {
		count   uint64
		buckets [64]bucket
	}
)

func main() {
	socket := flag.String("socket", "", "the socket of a kflex runtime serving hashtab.o (required)")
	keys := flag.Int("keys", 1000, "keys to put")
	workers := flag.Int("workers", 4, "goroutines putting keys at once")
	flag.Parse()
	if *socket == "" || *keys < 1 || *workers < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*socket, *keys, *workers, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "hashtab:", err)
		os.Exit(1)
	}
}

// run puts keys 1..keys (key k → k*k) from workers goroutines, gets them
// back, walks the table from Go under its locks, deletes the odd keys and
// walks it again, then deletes the rest: it leaves the table empty, as it
// found it, so that it can run again against the same runtime.
func run(socket string, keys, workers int, out io.Writer) error {
	c, err := userspace.Dial(socket, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	tp, err := c.Global("table", uint64(unsafe.Sizeof(table{})))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "table at %#x in this process (heap offset %#x)\n", tp, tp-c.Base())

	put := func(k uint64) error { return call(c, "put", k, k*k, 1) }
	if err := parallel(keys, workers, put); err != nil {
		return err
	}
	fmt.Fprintf(out, "put %d keys from %d goroutines\n", keys, workers)
	if err := parallel(keys, workers, func(k uint64) error { return call(c, "get", k, k*k, 1) }); err != nil {
		return err
	}
	fmt.Fprintf(out, "got every key back through the extension\n")

	if err := walk(c, tp, keys, out); err != nil {
		return err
	}
	// del deletes the keys of one parity: the odd ones, then the rest.
	del := func(parity uint64) func(uint64) error {
		return func(k uint64) error {
			if k%2 != parity {
				return nil
			}
			return call(c, "del", k, 0, 1)
		}
	}
	for _, step := range []struct {
		parity uint64
		what   string
		left   int
	}{{1, "the odd keys", keys / 2}, {0, "the even keys: the table is empty again", 0}} {
		if err := parallel(keys, workers, del(step.parity)); err != nil {
			return err
		}
		fmt.Fprintf(out, "deleted %s\n", step.what)
		if err := walk(c, tp, step.left, out); err != nil {
			return err
		}
	}
	return nil
}

// call invokes program prog on a request (key, value) in the heap and
// checks its result; get's value must be value.
func call(c *userspace.Client, prog string, key, value uint64, want int64) error {
	req, err := c.Alloc(uint64(unsafe.Sizeof(request{})))
	if err != nil {
		return err
	}
	defer c.Free(req)
	r := (*request)(c.Pointer(req))
	r.key, r.value = key, value
	if prog == "get" {
		r.value = 0
	}
	r0, err := c.Invoke(prog, c.Canonical(req))
	switch {
	case err != nil:
		return fmt.Errorf("%s %d: %w", prog, key, err)
	case int64(r0) != want:
		return fmt.Errorf("%s %d: returned %d, want %d", prog, key, int64(r0), want)
	case r.value != value:
		return fmt.Errorf("%s %d: value %d, want %d", prog, key, r.value, value)
	}
	return nil
}

// parallel runs f on keys 1..keys from workers goroutines.
func parallel(keys, workers int, f func(uint64) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for k := w + 1; k <= keys; k += workers {
				if err := f(uint64(k)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// walk reads every chain of the table at tp from Go, each under its
// bucket's lock, checks each entry's value and the table's count against
// want, and prints the longest chain.
func walk(c *userspace.Client, tp userspace.Ptr, want int, out io.Writer) error {
	t := (*table)(c.Pointer(tp))
	entries, longest := 0, 0
	for i := range t.buckets {
		b := tp + userspace.Ptr(unsafe.Offsetof(t.buckets)+uintptr(i)*unsafe.Sizeof(bucket{}))
		mu, err := c.Mutex(b)
		if err != nil {
			return err
		}
		if err := mu.Lock(); errors.Is(err, mcs.ErrOwnerDied) {
			mu.Consistent() // each chain is whole after every store of the extension
		} else if err != nil {
			return fmt.Errorf("bucket %d: %w", i, err)
		}
		n := 0
		for e := c.LoadPtr(b + 8); e != 0; e = c.LoadPtr(e + 16) {
			ent := (*entry)(c.Pointer(e))
			if ent.value != ent.key*ent.key {
				mu.Unlock()
				return fmt.Errorf("bucket %d: key %d has value %d", i, ent.key, ent.value)
			}
			n++
		}
		mu.Unlock()
		entries += n
		longest = max(longest, n)
	}
	if entries != want || t.count != uint64(want) {
		return fmt.Errorf("walked %d entries, the table counts %d, want %d", entries, t.count, want)
	}
	fmt.Fprintf(out, "walked the table from Go under its locks: %d entries in %d buckets, the longest chain %d\n",
		entries, len(t.buckets), longest)
	return nil
}
