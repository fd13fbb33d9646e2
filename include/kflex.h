/* kflex.h: what a C extension for kflex includes.
 *
 * Build:   clang-19 -O2 -target bpf -mcpu=v4 -I include -c ext.c -o ext.o
 * Serve:   kflex serve --socket PATH ext.o          every program, by function name
 *          kflex serve --socket PATH ext.o:put      one of them
 * Check:   kflex verify ext.o:put
 *
 * examples/hashtab is a whole extension (a hash table in the heap under
 * per-bucket locks) with its Go client. The numbers below are abi's (package
 * github.com/kflex-go/kflex/abi); a test keeps them equal.
 *
 * Programs
 * --------
 * A program is a global function in a section of its own (KFLEX_PROG):
 *
 *     KFLEX_PROG kflex_u64 name(const struct kflex_ctx *ctx, kflex_u64 ctx_len, void *arg)
 *
 * r1 = ctx: the context below, read-only; r2 = its length (48 bytes);
 * r3 = arg: the invoker's argument (ctx->arg) as a pointer into the heap. The
 * return value (r0) is what the invoker gets. A program's name is at most 64
 * bytes (clients send it; a longer one is refused at load), and so is the
 * name of a global that clients find. Static functions and functions
 * in .text are subprograms, called as usual (bpf-to-bpf calls, at most 7
 * deep, no recursion).
 *
 * Memory
 * ------
 * The heap is shared by the runtime and every attached process. Any pointer
 * may be dereferenced: the runtime confines every access to the heap (an
 * address outside it wraps into it), so a wrong pointer reads or writes a
 * wrong place of the heap, never the runtime's memory. A NULL pointer is the
 * heap's first page, its header: the runtime puts the header back after the
 * invocation (and logs it), but what a wild store hits elsewhere (the lock
 * queues' nodes, the allocator's tables, another's data) stays hit. Pointers
 * stored in the heap are in the runtime's view, which is the view a program
 * sees: store and follow them as usual (Go code converts with userspace's
 * LoadPtr and StorePtr). Each stack frame is 512 bytes.
 *
 * Globals (.data, .rodata, .bss) live in the heap too: the runtime allocates
 * and initialises them when it loads the object, and frees them when it
 * stops. An application finds a global (not static) variable by name:
 * userspace's Client.Global("name", size) returns its address in the
 * application's view. The globals of all objects a runtime loads share one
 * namespace. .rodata is not write-protected. BPF maps do not exist here:
 * keep data in globals and in memory from kflex_alloc.
 *
 * Cancellation
 * ------------
 * Every loop's back-edge and every helper call is a point where the runtime
 * may stop the program: past its time budget (kflex serve --budget), when
 * its invoker goes away, or on request (kflex cancel). What it holds there
 * is released: its locks pass to their next acquirer with
 * KFLEX_LOCK_OWNER_DIED, and what it allocated and has not published
 * (stored in the heap, returned, freed) is freed. Loops need no bound.
 */
#ifndef KFLEX_H
#define KFLEX_H

typedef __UINT8_TYPE__ kflex_u8;
typedef __UINT32_TYPE__ kflex_u32;
typedef __UINT64_TYPE__ kflex_u64;
typedef __INT64_TYPE__ kflex_s64;

/* KFLEX_PROG marks a function as a program. */
#define KFLEX_PROG __attribute__((section("kflex"), used))

/* The context a program gets in r1: six read-only words (abi.CtxFields). */
struct kflex_ctx {
	kflex_u64 arg;        /* the invoker's argument; r3 holds it as a heap pointer */
	kflex_u64 node;       /* for kflex_lock: this executor's queue node */
	kflex_u64 node_index; /* for kflex_lock: its index + 1 */
	kflex_u64 held;       /* for kflex_lock: the held bits of the runtime's owner slot */
	kflex_u64 node_table; /* for kflex_lock: the queue-node table */
	kflex_u64 data_len;   /* bytes of data at arg (a UDP datagram, kflex serve --udp), else 0 */
};

/* Helpers (abi.Helper*): calls to these constants become "call N". Each is
 * a cancellation point. */

/* kflex_alloc returns size bytes of the heap, not zeroed, or 0. */
static void *(*const kflex_alloc)(kflex_u64 size) = (void *)0x4b460010;
/* kflex_free returns what kflex_alloc gave to the heap: 0, or 1 if p is not
 * the allocator's or is the runtime's own (a global, an executor's stack),
 * which it leaves alone. */
static long (*const kflex_free)(void *p) = (void *)0x4b460011;
/* kflex_time is monotonic nanoseconds. */
static kflex_u64 (*const kflex_time)(void) = (void *)0x4b460012;
/* kflex_cpu is the CPU the program runs on. */
static kflex_u64 (*const kflex_cpu)(void) = (void *)0x4b460013;
/* kflex_trace writes v to the runtime's trace output. */
static long (*const kflex_trace)(kflex_u64 v) = (void *)0x4b460014;

/* Locks
 * -----
 * struct kflex_lock is a lock word in the heap (0: free), the MCS lock that
 * Go code takes too (userspace's Heap.Mutex on its address; package mcs).
 * kflex_lock and kflex_unlock call the runtime's own lock subprograms,
 * mcs_lock and mcs_unlock, which the loader links into the program: one lock
 * implementation for every executor. kflex_lock returns
 *
 *   KFLEX_LOCK_ACQUIRED         the lock is held;
 *   KFLEX_LOCK_OWNER_DIED       the lock is held, taken over from a holder
 *                               that died or was cancelled: repair the data
 *                               it protects, call kflex_consistent, then
 *                               unlock (unlocked without kflex_consistent,
 *                               the lock becomes not recoverable);
 *   KFLEX_LOCK_NOT_RECOVERABLE  the lock is not held, and never will be.
 *
 * Call kflex_unlock on every path after kflex_lock, whatever it returned
 * (on a lock not recoverable it changes nothing), in the same function: a
 * function returns holding no lock. The verifier checks it.
 * While a lock is held across a cancellation point (a loop, a helper call,
 * a call of a subprogram), its address must stay in a local variable that
 * the compiler keeps in a register, so that a cancellation can release it:
 * pass the same pointer variable to kflex_lock and kflex_unlock. The
 * verifier rejects a program where no callee-saved register (r6-r9) keeps
 * it; a lock at a fixed address (a global struct kflex_lock) goes through
 * kflex_keep first, which stops the compiler from reloading the constant.
 */
struct kflex_lock {
	kflex_u64 word;
};

#define KFLEX_LOCK_ACQUIRED 0
#define KFLEX_LOCK_OWNER_DIED (-130)
#define KFLEX_LOCK_NOT_RECOVERABLE (-131)

/* The bytecode lock's subprograms (mcs.BytecodeLock), linked by the loader.
 * Call them through kflex_lock and kflex_unlock. */
extern int mcs_lock(struct kflex_lock *lock, kflex_u64 node, kflex_u64 node_index, kflex_u64 held,
		    kflex_u64 node_table);
extern int mcs_unlock(struct kflex_lock *lock, kflex_u64 held, kflex_u64 node);

static __attribute__((always_inline)) inline int kflex_lock(const struct kflex_ctx *ctx, struct kflex_lock *lock)
{
	return mcs_lock(lock, ctx->node, ctx->node_index, ctx->held, ctx->node_table);
}

static __attribute__((always_inline)) inline void kflex_unlock(const struct kflex_ctx *ctx, struct kflex_lock *lock)
{
	mcs_unlock(lock, ctx->held, ctx->node);
}

/* kflex_consistent marks the data under a lock repaired after kflex_lock
 * returned KFLEX_LOCK_OWNER_DIED: it clears the word's owner-died bit
 * (abi.ConsistentCall; Go: Mutex.Consistent). */
static __attribute__((always_inline)) inline void kflex_consistent(struct kflex_lock *lock)
{
	__atomic_fetch_and(&lock->word, ~(kflex_u64)2, __ATOMIC_SEQ_CST);
}

/* kflex_keep(p) is p, hidden from the compiler's constant folding. */
#define kflex_keep(p)                                  \
	({                                             \
		__typeof__(p) __kflex_kept = (p);      \
		__asm__ volatile("" : "+r"(__kflex_kept)); \
		__kflex_kept;                          \
	})

#endif /* KFLEX_H */
