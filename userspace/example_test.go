package userspace_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/userspace"
)

// A list node in the heap: next (canonical pointer) at 0, value at 8.
const nodeNext, nodeValue = 0, 8

// Example builds a small linked list under a heap lock and walks it back from a
// second attachment at another base, as another process would.
func Example() {
	dir, _ := os.MkdirTemp("", "kflex-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "heap")

	a, err := userspace.Create(path, 1<<20, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	mu, lockPtr, _ := a.NewMutex()
	a.SetRoot(0, lockPtr)

	if err := mu.Lock(); err != nil {
		fmt.Println(err)
		return
	}
	var head userspace.Ptr
	for v := uint64(3); v > 0; v-- {
		n, _ := a.Alloc(16)
		a.StorePtr(n+nodeNext, head)
		*a.Uint64(n + nodeValue) = v * 10
		head = n
	}
	a.SetRoot(1, head)
	mu.Unlock()

	b, err := userspace.Attach(path, nil) // a second view, as in another process
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	fmt.Println("different bases:", a.Base() != b.Base())
	bmu, _ := b.Mutex(b.Root(0))
	if err := bmu.Lock(); err != nil {
		fmt.Println(err)
		return
	}
	for n := b.Root(1); n != 0; n = b.LoadPtr(n + nodeNext) {
		fmt.Println(*b.Uint64(n + nodeValue))
	}
	bmu.Unlock()
	// Output:
	// different bases: true
	// 10
	// 20
	// 30
}

// ExampleHeap_NewMutex takes a heap lock as every process must: a holder
// that died leaves the lock to the next one with mcs.ErrOwnerDied, which
// repairs what the lock guards and marks it consistent before unlocking.
func ExampleHeap_NewMutex() {
	dir, _ := os.MkdirTemp("", "kflex-example")
	defer os.RemoveAll(dir)
	h, err := userspace.Create(filepath.Join(dir, "heap"), 1<<20, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	mu, lockPtr, err := h.NewMutex()
	if err != nil {
		fmt.Println(err)
		return
	}
	balance, _ := h.Alloc(8)
	*h.Uint64(balance) = 100
	h.SetRoot(0, lockPtr) // where other processes find them
	h.SetRoot(1, balance)

	switch err := mu.Lock(); {
	case errors.Is(err, mcs.ErrOwnerDied):
		// Held now, taken over from a dead holder: repair the balance
		// (here: nothing half-done to undo), then say so.
		mu.Consistent()
	case err != nil: // mcs.ErrNotRecoverable: an earlier taker did not repair
		fmt.Println(err)
		return
	}
	*h.Uint64(balance) -= 30
	mu.Unlock()
	fmt.Println("balance:", *h.Uint64(h.Root(1)))
	// Output:
	// balance: 70
}
