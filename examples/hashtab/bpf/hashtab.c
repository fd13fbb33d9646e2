/* A hash table in the heap, under per-bucket locks: the extension side of
 * examples/hashtab. Programs put, get and del take a struct request in the
 * heap (their argument); the Go client (main.go) calls them, and walks the
 * same table from Go under the same locks. */
#include "kflex.h"

#define NBUCKETS 64

struct entry {
	kflex_u64 key, value;
	struct entry *next;
};

struct bucket {
	struct kflex_lock lock;
	struct entry *head;
};

/* The table: a global, so in the heap; the client finds it by name. */
struct table {
	kflex_u64 count; /* entries in the table, changed atomically */
	struct bucket buckets[NBUCKETS];
} table;

/* The hash's multiplier (.data); the client may change it before the first
 * put. */
kflex_u64 seed = 0x9e3779b97f4a7c15ULL;

/* What put, get and del read and write. */
struct request {
	kflex_u64 key, value;
};

/* bucket_of is a subprogram: a bpf-to-bpf call. */
static __attribute__((noinline)) struct bucket *bucket_of(kflex_u64 key)
{
	return &table.buckets[(key * seed) >> 58];
}

/* find is the entry of key in b, or 0; b is locked. */
static __attribute__((noinline)) struct entry *find(struct bucket *b, kflex_u64 key)
{
	struct entry *e;

	for (e = b->head; e; e = e->next)
		if (e->key == key)
			return e;
	return 0;
}

/* unlink takes key's entry out of b's chain and returns it, or 0; b is
 * locked. */
static __attribute__((noinline)) struct entry *unlink(struct bucket *b, kflex_u64 key)
{
	struct entry **link, *e;

	for (link = &b->head; (e = *link) != 0; link = &e->next) {
		if (e->key == key) {
			*link = e->next;
			return e;
		}
	}
	return 0;
}

enum op { PUT, GET, DEL };

/* apply does op on key's bucket under its lock:
 *   PUT sets key to value: 1 if it added the key, 0 if it was there, -1 if
 *       the heap is full;
 *   GET stores key's value in the request: 1, or 0 if key is not there;
 *   DEL removes key: 1, or 0 if it was not there.
 * -2: the bucket's lock is not recoverable. A holder that died left each
 * chain whole (every change is one store), so there is nothing to repair. */
static __attribute__((noinline)) kflex_s64 apply(const struct kflex_ctx *ctx, struct request *req, int op)
{
	struct bucket *b = bucket_of(req->key);
	struct entry *e, *gone = 0;
	kflex_s64 ret = 0;
	int r = kflex_lock(ctx, &b->lock);

	if (r == KFLEX_LOCK_NOT_RECOVERABLE) {
		kflex_unlock(ctx, &b->lock);
		return -2;
	}
	if (r == KFLEX_LOCK_OWNER_DIED)
		kflex_consistent(&b->lock);
	switch (op) {
	case PUT:
		e = find(b, req->key);
		if (e) {
			e->value = req->value;
		} else if ((e = kflex_alloc(sizeof(*e))) == 0) {
			ret = -1;
		} else {
			e->key = req->key;
			e->value = req->value;
			e->next = b->head;
			b->head = e;
			__atomic_fetch_add(&table.count, 1, __ATOMIC_RELAXED);
			ret = 1;
		}
		break;
	case GET:
		e = find(b, req->key);
		if (e) {
			req->value = e->value;
			ret = 1;
		}
		break;
	default:
		gone = unlink(b, req->key);
		if (gone) {
			__atomic_fetch_sub(&table.count, 1, __ATOMIC_RELAXED);
			ret = 1;
		}
	}
	kflex_unlock(ctx, &b->lock);
	if (gone)
		kflex_free(gone);
	return ret;
}

/* The programs: what apply says of each op. */
KFLEX_PROG kflex_s64 put(const struct kflex_ctx *ctx, kflex_u64 len, struct request *req)
{
	return apply(ctx, req, PUT);
}

KFLEX_PROG kflex_s64 get(const struct kflex_ctx *ctx, kflex_u64 len, struct request *req)
{
	return apply(ctx, req, GET);
}

KFLEX_PROG kflex_s64 del(const struct kflex_ctx *ctx, kflex_u64 len, struct request *req)
{
	return apply(ctx, req, DEL);
}
