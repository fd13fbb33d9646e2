package serve_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/object"
	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// tally is a C extension with a helper call (kflex_alloc), a called
// function, globals in .bss, .data and .rodata, two programs and a lock
// taken through include/kflex.h: add adds step * scale[arg & 3] to the
// count under the lock and keeps a note of each new count in a list;
// count returns the count.
const tally = `#include "kflex.h"
struct note {
	kflex_u64 count;
	struct note *next;
};
struct tally {
	struct kflex_lock lock;
	kflex_u64 count;
	struct note *notes;
} tally;                                        /* .bss */
kflex_u64 step = 1;                             /* .data */
int last_lock;                                  /* .bss: what add's kflex_lock returned */
const kflex_u64 scale[4] = {1, 10, 100, 1000};  /* .rodata */

static __attribute__((noinline)) kflex_u64 amount(kflex_u64 arg)
{
	return step * scale[arg & 3];
}

KFLEX_PROG kflex_s64 add(const struct kflex_ctx *ctx)
{
	struct tally *t = kflex_keep(&tally);
	struct note *n;
	kflex_s64 count;
	int r = kflex_lock(ctx, &t->lock);

	if (r == KFLEX_LOCK_NOT_RECOVERABLE) {
		kflex_unlock(ctx, &t->lock);
		return -1;
	}
	last_lock = r;
	if (r == KFLEX_LOCK_OWNER_DIED)
		kflex_consistent(&t->lock);
	t->count += amount(ctx->arg);
	count = t->count;
	n = kflex_alloc(sizeof(*n));
	if (n) {
		n->count = count;
		n->next = t->notes;
		t->notes = n;
	}
	kflex_unlock(ctx, &t->lock);
	return count;
}

KFLEX_PROG kflex_u64 count(const struct kflex_ctx *ctx)
{
	return tally.count;
}

/* spin holds the lock until the count is arg: past its budget, it is
 * cancelled, and the lock passes on with KFLEX_LOCK_OWNER_DIED. */
KFLEX_PROG kflex_s64 spin(const struct kflex_ctx *ctx)
{
	struct tally *t = kflex_keep(&tally);
	int r = kflex_lock(ctx, &t->lock);

	while (r == KFLEX_LOCK_ACQUIRED && *(volatile kflex_u64 *)&t->count != ctx->arg)
		;
	kflex_unlock(ctx, &t->lock);
	return r;
}
`

// tallyLayout is struct tally as Go sees it.
type tallyLayout struct {
	lock, count, notes uint64
}

// The "done when": a clang-built object with helper calls, a called
// function, globals, two programs and a lock taken through the header
// verifies, is served (JIT and interpreter) and answers Go clients, in this
// process and through the socket; Go takes the extension's lock.
func TestCExtension(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	obj, err := object.Open(testutil.BuildC(t, "tally", tally))
	require.NoError(t, err)
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	f := startOn(t, h, serve.Options{JIT: 1, Interpreted: 1, Objects: []*object.Object{obj},
		Budgets: map[string]time.Duration{"spin": 20 * time.Millisecond}})

	addr, size, ok := f.rt.Global("tally")
	require.True(t, ok)
	assert.Equal(t, uint64(unsafe.Sizeof(tallyLayout{})), size)
	assert.Equal(t, []string{"last_lock", "scale", "step", "tally"}, f.rt.Globals(), "globals by name; static ones are not")
	_, _, ok = f.rt.Global("amount")
	assert.False(t, ok, "functions are not globals")

	c, err := userspace.Dial(f.socket, nil)
	require.NoError(t, err)
	defer c.Close()
	tp, err := c.Global("tally", uint64(unsafe.Sizeof(tallyLayout{})))
	require.NoError(t, err)
	assert.Equal(t, addr&h.Mask(), uint64(tp-c.Base()), "the same global, in the client's view")
	stepPtr, err := c.Global("step", 8)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), *c.Uint64(stepPtr), ".data initialised")

	// Two goroutines add through the socket, one in process, while Go takes
	// the same lock and checks the list the extension keeps under it.
	var wg sync.WaitGroup
	const rounds = 50
	for g := range 3 {
		wg.Go(func() {
			for i := range rounds {
				var err error
				if g == 2 {
					_, err = f.rt.Invoke(context.Background(), "add", uint64(i))
				} else {
					_, err = c.Invoke("add", uint64(i))
				}
				if !assert.NoError(t, err) {
					return
				}
			}
		})
	}
	mu, err := c.Mutex(tp)
	require.NoError(t, err)
	for range 20 {
		require.NoError(t, mu.Lock())
		tl := (*tallyLayout)(c.Pointer(tp))
		if n := tl.notes; n != 0 {
			assert.Equal(t, tl.count, *c.Uint64(c.Local(n)), "the newest note has the count, under the lock")
		}
		mu.Unlock()
	}
	wg.Wait()

	var want uint64
	for i := range rounds {
		want += 3 * []uint64{1, 10, 100, 1000}[i&3]
	}
	total, err := c.Invoke("count", 0)
	require.NoError(t, err)
	assert.Equal(t, want, total, "count: the second program reads what add wrote")
	assert.Equal(t, want, (*tallyLayout)(c.Pointer(tp)).count, "Go reads the global")
	notes := 0
	for n := c.LoadPtr(tp + 16); n != c.Local(0); n = c.LoadPtr(n + 8) {
		notes++
	}
	assert.Equal(t, 3*rounds, notes)

	*c.Uint64(stepPtr) = 2 // the extension reads .data from the heap
	r0, err := c.Invoke("add", 3)
	require.NoError(t, err)
	assert.Equal(t, want+2000, r0)

	// Cancelled while it holds the lock, spin's lock goes to the next add
	// with the owner-died result, which add repairs.
	_, err = c.Invoke("spin", 1)
	assert.ErrorContains(t, err, "cancelled")
	lastLock, err := c.Global("last_lock", 4)
	require.NoError(t, err)
	_, err = c.Invoke("add", 0)
	require.NoError(t, err)
	assert.Equal(t, int32(-130), *(*int32)(c.Pointer(lastLock)), "KFLEX_LOCK_OWNER_DIED")
	_, err = c.Invoke("add", 0)
	require.NoError(t, err)
	assert.Equal(t, int32(0), *(*int32)(c.Pointer(lastLock)), "repaired: KFLEX_LOCK_ACQUIRED")

	_, err = c.Global("nope", 8)
	assert.EqualError(t, err, `no such global "nope" (there are last_lock, scale, step, tally)`)
	assert.ErrorIs(t, err, userspace.ErrNoSuchGlobal)
	_, err = c.Global("step", 16)
	assert.EqualError(t, err, "no such global: step is 8 bytes, not 16")
	assert.ErrorIs(t, err, userspace.ErrNoSuchGlobal)
}

// TestObjectsRefused: objects the runtime cannot load together are errors
// naming them.
func TestObjectsRefused(t *testing.T) {
	if err := jit.Supported(); err != nil {
		t.Skipf("skipped: %v", err)
	}
	a, err := object.Open(testutil.BuildC(t, "a", tally))
	require.NoError(t, err)
	b, err := object.Open(testutil.BuildC(t, "b", `#include "kflex.h"
kflex_u64 step;
KFLEX_PROG kflex_u64 other(const struct kflex_ctx *ctx) { return step; }
KFLEX_PROG kflex_u64 add1(const struct kflex_ctx *ctx) { return ctx->arg + 1; }`))
	require.NoError(t, err)
	h, err := heap.Create(filepath.Join(t.TempDir(), "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	require.NoError(t, err)
	defer h.Close()
	other, err := b.Select("other")
	require.NoError(t, err)
	live := h.Stats().LiveObjects
	_, err = serve.NewWith(h, nil, serve.Options{JIT: 1, Objects: []*object.Object{a, other}})
	assert.EqualError(t, err, "serve: global step is defined by "+a.Name+" and "+b.Name)
	assert.Equal(t, live, h.Stats().LiveObjects, "the globals allocated before the failure are freed")
	_, err = serve.NewWith(h, programs(t), serve.Options{JIT: 1, Objects: []*object.Object{b}})
	assert.ErrorContains(t, err, `serve: two programs named "add1" (the second in `+b.Name+")")
	assert.Equal(t, live, h.Stats().LiveObjects)
	rt, err := serve.NewWith(h, nil, serve.Options{JIT: 1, Objects: []*object.Object{other}})
	require.NoError(t, err)
	_, _, ok := rt.Global("step")
	assert.True(t, ok)
	require.NoError(t, rt.Close())
	assert.Equal(t, live, h.Stats().LiveObjects, "Close frees the globals")
}
