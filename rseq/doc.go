// Package rseq registers restartable-sequence areas for OS threads and drives
// the Linux time-slice extension from them: a thread that holds a lock asks the
// scheduler not to preempt it for a few microseconds, so that the waiters
// spinning on the lock are not stuck behind a descheduled holder.
//
// Layer 1 (heap, translate, rseq, bytecode): it imports no kflex package.
//
// # Using it
//
// A goroutine calls runtime.LockOSThread, then Register, and keeps both for as
// long as it uses the returned Thread; Unregister comes before UnlockOSThread.
// Around a critical section it calls Request before taking the lock and Release
// after dropping it. Neither makes a system call unless the kernel actually
// extended the slice (then Release yields it back, as the protocol demands).
//
// # Fallback
//
// Every step degrades instead of failing. Without rseq (or with the thread's
// rseq already owned by someone else, as glibc does for cgo threads), Register
// returns a Thread whose Request and Release do nothing and whose CPU falls back
// to getcpu. Without the slice extension (Linux before 7.0, or disabled at boot),
// the area is still registered, Request and Release touch only memory, and
// nothing is ever granted. Thread.Status and Features say which case holds.
//
// In a cgo binary glibc registers rseq for every thread it starts and pure Go
// cannot reach glibc's area, so threads report Foreign; running such a program
// with GLIBC_TUNABLES=glibc.pthread.rseq=0 leaves rseq to kflex.
//
// The protocol logic is separate from the system calls, so tests drive it with
// a stand-in kernel that grants and revokes by writing the area, as the real
// one does.
package rseq
