// Package futex wraps the Linux futex system call for words that live in memory
// shared between processes.
//
// Layer 0 (system plumbing and the executor ABI: internal/sys/*, abi,
// internal/testutil): it imports no kflex package.
//
// Every operation here is a shared futex (no FUTEX_PRIVATE_FLAG): the waiters and
// wakers of a heap word are in different processes, and a private futex is keyed by
// the address space, so a wake from another process would never reach the sleeper.
package futex

import (
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	opWait  = 0   // FUTEX_WAIT
	opWake  = 1   // FUTEX_WAKE
	private = 128 // FUTEX_PRIVATE_FLAG
)

// futex makes the call shared, then private if the kernel cannot key a shared
// futex on the memory at addr (see the package comment).
func futex(addr *uint32, op, val uintptr, ts unsafe.Pointer) (uintptr, unix.Errno) {
	r, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), op, val, uintptr(ts), 0, 0)
	if e == unix.EFAULT {
		r, _, e = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), op|private, val, uintptr(ts), 0, 0)
	}
	return r, e
}

// Bits the kernel manages in a robust futex word (include/uapi/linux/futex.h).
const (
	Waiters   = 0x80000000 // FUTEX_WAITERS: someone sleeps on the word
	OwnerDied = 0x40000000 // FUTEX_OWNER_DIED: the thread named by TIDMask exited
	TIDMask   = 0x3fffffff // FUTEX_TID_MASK
)

// Wait sleeps while *addr == val, for at most timeout (forever if timeout < 0).
// It returns nil when woken, when the word no longer held val, on a signal, or on
// timeout: callers re-check their condition in a loop, as with any futex, and a
// lost wake-up costs at most one timeout.
func Wait(addr *uint32, val uint32, timeout time.Duration) error {
	var tsp unsafe.Pointer
	var ts unix.Timespec
	if timeout >= 0 {
		ts = unix.NsecToTimespec(int64(timeout))
		tsp = unsafe.Pointer(&ts)
	}
	_, e := futex(addr, opWait, uintptr(val), tsp)
	switch e {
	case 0, unix.EAGAIN, unix.EINTR, unix.ETIMEDOUT:
		return nil
	}
	return errors.Join(errors.New("futex wait"), e)
}

// Wake wakes at most n waiters sleeping on addr and returns how many it woke.
func Wake(addr *uint32, n int) (int, error) {
	r, e := futex(addr, opWake, uintptr(n), nil)
	if e != 0 {
		return 0, errors.Join(errors.New("futex wake"), e)
	}
	return int(r), nil
}

// sysFutexWaitv is futex_waitv(2) (Linux 5.16), the same number on every
// architecture.
const sysFutexWaitv = 449

// waitvFlags: a 32-bit futex (FUTEX2_SIZE_U32), shared unless private is added.
const waitvU32 = 2

// waitv is the kernel's struct futex_waitv.
type waitv struct {
	val   uint64
	uaddr uint64
	flags uint32
	_     uint32
}

// What WaitAny's sleep ended with when no word's wake ended it.
const (
	TimedOut    = -1 // the timeout passed
	Changed     = -2 // a word did not hold its value: no sleep
	Interrupted = -3 // a signal
)

// WaitAny sleeps while *addrs[i] == vals[i] for every i, until a wake on any
// of the words, for at most timeout (forever if timeout < 0). It returns the
// index of the word whose wake ended the sleep, or TimedOut, Changed or
// Interrupted: every outcome is one a caller re-checks its condition after,
// as with Wait (a wake may be spurious, or meant for an earlier sleep). At
// most 8 words.
//
// A wake on one word takes the sleeper off that word's queue only: until it
// runs, it is still queued on the others, and a wake of one sleeper on them
// (FUTEX_WAKE of 1, the kernel's wake at a robust futex owner's death) may be
// spent on it. A sleeper that returns with one word's wake and finds another
// word changed must assume that it took a wake meant for someone else.
func WaitAny(addrs []*uint32, vals []uint32, timeout time.Duration) (int, error) {
	var ws [8]waitv
	if len(addrs) > len(ws) || len(addrs) != len(vals) {
		return 0, errors.New("futex waitv: bad word list")
	}
	for i, a := range addrs {
		ws[i] = waitv{val: uint64(vals[i]), uaddr: uint64(uintptr(unsafe.Pointer(a))), flags: waitvU32}
	}
	var tsp unsafe.Pointer
	var ts unix.Timespec
	if timeout >= 0 {
		// futex_waitv's timeout is absolute, on the clock named by its last
		// argument.
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return 0, err
		}
		ts = unix.NsecToTimespec(unix.TimespecToNsec(ts) + int64(timeout))
		tsp = unsafe.Pointer(&ts)
	}
	call := func() (uintptr, unix.Errno) {
		r, _, e := unix.Syscall6(sysFutexWaitv, uintptr(unsafe.Pointer(&ws[0])), uintptr(len(addrs)), 0,
			uintptr(tsp), unix.CLOCK_MONOTONIC, 0)
		return r, e
	}
	r, e := call()
	if e == unix.EFAULT {
		// As futex does: memory the kernel cannot key a shared futex on.
		for i := range addrs {
			ws[i].flags |= private
		}
		r, e = call()
	}
	switch e {
	case 0:
		return int(r), nil
	case unix.EAGAIN:
		return Changed, nil
	case unix.EINTR:
		return Interrupted, nil
	case unix.ETIMEDOUT:
		return TimedOut, nil
	}
	return 0, errors.Join(errors.New("futex waitv"), e)
}
