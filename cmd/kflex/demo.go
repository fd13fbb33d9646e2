package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/userspace"
)

func init() {
	commands["demo"] = command{summary: "run processes that share a heap and its locks, and show what they did", run: runDemo}
	commands["demo-worker"] = command{hidden: true, run: runDemoWorker}
}

// The demo's heap: root 0 holds the lock, which guards the counter beside it
// (lock word at 0, counter at 8) and the list whose head is root 1. A list entry
// is {next (canonical pointer), worker id, sequence number}.
const (
	demoWorkers     = 2
	demoGoroutines  = 4
	demoIncrements  = 50000 // per goroutine
	demoRecordEvery = 1000  // increments between list entries
	entrySize       = 24
)

func runDemo(args []string, out io.Writer) error {
	fs := newFlags("demo", "[--heap PATH]", `Create a heap, start worker processes that each map it at their own base and
increment a shared counter under one MCS lock while appending entries to a shared
linked list; then check the totals, walk the list, and SIGKILL one more worker to
show the kernel reporting its death in the heap's owner table.`, out)
	keep := fs.String("heap", "", "create the heap at this path and keep it (default: a temporary file)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	path := *keep
	if path == "" {
		dir, err := os.MkdirTemp("", "kflex-demo")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "heap")
	}
	h, err := userspace.Create(path, 16<<20, nil)
	if err != nil {
		return err
	}
	defer h.Close()
	lockPtr, err := h.Alloc(16)
	if err != nil {
		return err
	}
	*h.Uint64(lockPtr), *h.Uint64(lockPtr + 8) = 0, 0
	h.SetRoot(0, lockPtr)
	h.SetRoot(1, 0)
	fmt.Fprintf(out, "heap %s: %d MiB, this process's view at %#x\n", path, h.Size()>>20, h.Base())

	self, err := os.Executable()
	if err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	reports := make([]string, demoWorkers)
	errs := make([]error, demoWorkers)
	for id := range demoWorkers {
		// Force distinct views: each worker maps the heap at its own base.
		base := uint64(0x2000_0000_0000) + uint64(id+1)<<32
		cmd := exec.Command(self, "demo-worker", path, strconv.Itoa(id+1), strconv.FormatUint(base, 10))
		cmd.Stderr = os.Stderr
		wg.Go(func() {
			b, err := cmd.Output()
			reports[id], errs[id] = string(b), err
		})
	}
	total := uint64(demoWorkers * demoGoroutines * demoIncrements)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for tick := time.NewTicker(200 * time.Millisecond); ; {
		select {
		case <-tick.C:
			fmt.Fprintf(out, "  ... counter %d of %d\n", *h.Uint64(lockPtr + 8), total)
			continue
		case <-done:
			tick.Stop()
		}
		break
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("demo worker: %w", err)
	}
	for _, r := range reports {
		fmt.Fprint(out, r)
	}

	mu, err := h.Mutex(lockPtr)
	if err != nil {
		return err
	}
	if err := mu.Lock(); err != nil {
		return fmt.Errorf("demo lock: %w", err)
	}
	counter := *h.Uint64(lockPtr + 8)
	perWorker := map[uint64]int{}
	entries := 0
	for n := h.Root(1); n != 0; {
		next := h.LoadPtr(n)
		perWorker[*h.Uint64(n + 8)]++
		entries++
		if err := h.Free(n); err != nil {
			mu.Unlock()
			return fmt.Errorf("free list entry: %w", err)
		}
		n = next
	}
	h.SetRoot(1, 0)
	mu.Unlock()
	fmt.Fprintf(out, "counter %d (expected %d) after %v: %s\n", counter, total,
		time.Since(start).Round(time.Millisecond), verdict(counter == total))
	wantEntries := int(total / demoRecordEvery)
	fmt.Fprintf(out, "list: %d entries walked from this view (expected %d), per worker %v: %s\n",
		entries, wantEntries, perWorker, verdict(entries == wantEntries))
	live := h.Raw().Stats().LiveObjects
	fmt.Fprintf(out, "allocator: %d live objects after freeing the list (the lock's block): %s\n", live, verdict(live == 1))

	if err := demoKill(self, path, h, out); err != nil {
		return err
	}
	if counter != total || entries != wantEntries || live != 1 {
		return errors.New("demo: results do not match")
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISMATCH"
}

// demoKill starts a worker that attaches and waits, SIGKILLs it, and times how
// long the kernel takes to mark its liveness word owner-died.
func demoKill(self, path string, h *userspace.Heap, out io.Writer) error {
	cmd := exec.Command(self, "demo-worker", path, "0", "0")
	cmd.Stderr = os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	sc := bufio.NewScanner(pipe)
	var slot uint32
	if !sc.Scan() {
		cmd.Process.Kill()
		return errors.New("demo: victim printed nothing")
	}
	if _, err := fmt.Sscanf(sc.Text(), "slot %d", &slot); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("demo: victim said %q", sc.Text())
	}
	died := make(chan bool, 1)
	go func() { died <- mcs.WaitDeath(h.Raw(), slot, 5*time.Second) }()
	time.Sleep(10 * time.Millisecond)
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	ok := <-died
	fmt.Fprintf(out, "SIGKILLed pid %d (owner slot %d): kernel marked it dead after %v: %s\n",
		cmd.Process.Pid, slot, time.Since(t0).Round(time.Microsecond), verdict(ok))
	if !ok {
		return errors.New("demo: death not reported")
	}
	return nil
}

// runDemoWorker is one worker process: demo-worker PATH ID BASE. ID 0 is the
// victim of demoKill: it attaches, prints its slot and waits to be killed.
func runDemoWorker(args []string, out io.Writer) error {
	if len(args) != 3 {
		return fmt.Errorf("demo-worker: %w: want PATH ID BASE", errUsage)
	}
	id, err1 := strconv.ParseUint(args[1], 10, 64)
	base, err2 := strconv.ParseUint(args[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("demo-worker: %w: %v", errUsage, err)
	}
	h, err := userspace.Attach(args[0], &userspace.Options{MapAt: uintptr(base)})
	if err != nil {
		return err
	}
	defer h.Close()
	if id == 0 {
		fmt.Fprintf(out, "slot %d\n", h.Process().Slot())
		time.Sleep(time.Minute)
		return errors.New("demo-worker: not killed")
	}
	lockPtr := h.Root(0)
	var wg sync.WaitGroup
	errs := make([]error, demoGoroutines)
	for g := range demoGoroutines {
		wg.Go(func() { errs[g] = demoWork(h, lockPtr, id) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(out, "worker %d: pid %d, view at %#x, owner slot %d: %d goroutines x %d increments, %d list entries\n",
		id, os.Getpid(), h.Base(), h.Process().Slot(), demoGoroutines, demoIncrements,
		demoGoroutines*demoIncrements/demoRecordEvery)
	return nil
}

func demoWork(h *userspace.Heap, lockPtr userspace.Ptr, id uint64) error {
	mu, err := h.Mutex(lockPtr)
	if err != nil {
		return err
	}
	for i := 1; i <= demoIncrements; i++ {
		var entry userspace.Ptr
		if i%demoRecordEvery == 0 {
			if entry, err = h.Alloc(entrySize); err != nil {
				return err
			}
			*h.Uint64(entry + 8), *h.Uint64(entry + 16) = id, uint64(i)
		}
		if err := mu.Lock(); err != nil {
			return fmt.Errorf("demo worker lock: %w", err)
		}
		*h.Uint64(lockPtr + 8)++
		if entry != 0 {
			h.StorePtr(entry, h.Root(1))
			h.SetRoot(1, entry)
		}
		mu.Unlock()
	}
	return nil
}
