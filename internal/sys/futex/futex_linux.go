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
