// Package stress is kflex's kill harness: Run spawns worker processes attached
// to one heap, whose goroutines take a set of locks, update data with a
// checkable invariant under them, and allocate and free objects that they
// publish into that data, while the parent SIGKILLs workers at random moments
// (holding a lock, waiting for one, inside the allocator, anywhere) and
// restarts them. It counts what the recovery protocol must make impossible and
// reports what recovery cost. It is the code behind `kflex stress`.
//
// Layer 8 (harnesses over the whole runtime: bench, stress, examples,
// internal/layers): only the commands and tests import it.
//
// # The data each lock guards
//
// A lock record (layout.go) holds the lock word and two invariants that a
// holder breaks for a moment and a kill in that moment leaves broken:
//
//   - a pair of counters a and b, equal outside the critical section; the
//     holder increments a, spins (sometimes yields), then increments b;
//   - a circular doubly linked list of heap objects through a sentinel in the
//     record, with its length: insert and remove are three stores each
//     (forward link, backward link, length), ordered so that the forward
//     chain is a valid list after every store.
//
// A worker that gets mcs.ErrOwnerDied checks both: a broken one is repaired
// (b = a; the backward links and the length rebuilt from the forward chain)
// and counted as repaired, then it calls Consistent. A broken invariant under
// a nil Lock, a forward chain that does not parse, or ErrNotRecoverable is a
// violation.
//
// # Who owns an object
//
// Each goroutine has a thread record. Its hold word names the object it owns
// outside the lists: holdPending while it allocates (the offset is not known
// yet), the object from Alloc's return until the object is linked, and the
// object from before it is unlinked until Free returns. So a kill leaves every
// object in a list, named by a dead thread's hold, or freed; the one exception
// is a kill between Alloc's return and the store of its result, which orphans
// an object whose offset nobody knows, and such a thread's hold reads
// holdPending. At the end the parent walks the allocator's object bitmap:
// every allocated object must be the parent's table, in a list, or an orphan
// explained by a dead thread's hold (a pending hold explains one); what is
// left is leaked. Explained orphans are freed, and the allocator's live count
// must then equal what the lists reference.
//
// # Reproducibility
//
// Config.Seed drives the parent's choices: which worker, what to wait for
// before the kill (a thread holding, waiting, in the allocator, or nothing),
// and the delay; Config.Schedule's bytes, if any, make the first of them
// (FuzzCrossProcess). Where the workers are in their loop when the signal
// lands depends on the OS scheduler and is not reproducible.
//
// Built with -tags kflexfault, a kill can also aim at one of mcs's fault
// points (the steps of the lock protocol, and Attach's claim): the victim is
// killed at once and restarted with that point armed, and the new
// incarnation kills itself when one of its goroutines reaches it (the MCS
// window between the tail swap and the link, among others), which no timing
// of a signal from outside hits reliably.
//
// # Executors
//
// With Config.Runtime the extension runtime runs as a process of its own
// (runtime.go): its JIT and interpreting executors run an extension that
// takes the same locks and keeps the same invariants, are cancelled at
// random, and the process is killed and restarted like a worker. With
// Config.Kernel the heap is a BPF arena, inherited by every process with the
// kernel lock programs the parent loaded once, and goroutine 0 of every
// worker takes the locks with the lock's kernel form, in Linux (kernel.go).
package stress
