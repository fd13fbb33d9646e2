package object_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/internal/hostprobe"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/object"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// build compiles src and reads the object.
func build(t *testing.T, src string, flags ...string) *object.Object {
	t.Helper()
	obj, err := object.Open(testutil.BuildC(t, "ext", src, flags...))
	require.NoError(t, err)
	return obj
}

// link is program name of obj linked by the loader, its globals laid out
// from 4096.
func link(t *testing.T, obj *object.Object, name string) asm.Instructions {
	t.Helper()
	p, err := obj.Program(name)
	require.NoError(t, err)
	addr, _ := obj.Layout(4096)
	insns, err := loader.Link(p, addr)
	require.NoError(t, err)
	return insns
}

// run links program name of obj, verifies it with the runtime's
// configuration and runs it in the interpreter with arg, returning r0 (the
// programs here touch no memory but the context).
func run(t *testing.T, obj *object.Object, name string, arg uint64) uint64 {
	t.Helper()
	lp, err := loader.Load(link(t, obj, name), loader.Options{Interp: true})
	require.NoError(t, err)
	r0, err := interp.NewMachine().Run(lp.Interp, abi.Context{Arg: arg}.Bytes())
	require.NoError(t, err)
	return r0
}

// Found: a call to a kflex helper did not load ("invalid constant
// 0x4b460010": cilium/ebpf's reader takes helper numbers at or above 1<<28
// for platform-tagged ones). It reads, as "call N", and verifies.
func TestHelperCall(t *testing.T) {
	obj := build(t, `#include "kflex.h"
KFLEX_PROG kflex_u64 grab(const struct kflex_ctx *ctx)
{
	void *p = kflex_alloc(ctx->arg);
	if (p)
		kflex_free(p);
	return p != 0;
}`)
	insns := link(t, obj, "grab")
	var helpers []int64
	for _, ins := range insns {
		if ins.OpCode.JumpOp() == asm.Call && ins.Src == asm.R0 {
			helpers = append(helpers, ins.Constant)
		}
	}
	assert.Equal(t, []int64{abi.HelperAlloc, abi.HelperFree}, helpers)
	_, err := loader.Load(insns, loader.Options{})
	assert.NoError(t, err)
}

// Found: a function calling a non-inlined one was rejected ("falls through
// into the subprogram starting at 2": calls kept -1). Calls are resolved,
// across sections, and the program runs.
func TestCalledFunction(t *testing.T) {
	obj := build(t, `#include "kflex.h"
static __attribute__((noinline)) kflex_u64 twice(kflex_u64 x) { return 2 * x; }
__attribute__((noinline)) kflex_u64 plus1(kflex_u64 x) { return twice(x) + 1; }
KFLEX_PROG kflex_u64 calc(const struct kflex_ctx *ctx) { return plus1(ctx->arg) + twice(ctx->arg); }`)
	var syms []string
	for _, ins := range link(t, obj, "calc") {
		if s := ins.Symbol(); s != "" {
			syms = append(syms, s)
		}
	}
	assert.Equal(t, []string{"calc", "plus1", "twice"}, syms, "each function once, named")
	assert.Equal(t, uint64(4*20+1), run(t, obj, "calc", 20))
}

// globalsSrc has a global in each kind of section, a pointer initialiser
// and a static variable.
const globalsSrc = `#include "kflex.h"
kflex_u64 hits;                                   /* .bss */
kflex_u64 base = 1000;                            /* .data */
const kflex_u64 steps[4] = {1, 10, 100, 1000};    /* .rodata */
kflex_u64 *where = &hits;                         /* .data: a pointer to a global */
static kflex_u64 quiet = 7;                       /* .data, not published */
KFLEX_PROG kflex_u64 step(const struct kflex_ctx *ctx)
{
	hits++;
	quiet++;
	return base + steps[ctx->arg & 3] + (where == &hits) + quiet;
}`

// Found: globals were refused ("lddw with pseudo source 2 is not part of
// kflex's interface"). Each section is read with its contents and its
// global variables, the lddw of each reference gets its address, and a
// pointer initialiser the address it names.
func TestGlobals(t *testing.T) {
	obj := build(t, globalsSrc)
	secs := map[string]*object.Section{}
	for _, s := range obj.Sections {
		secs[s.Name] = s
	}
	require.Contains(t, secs, ".bss")
	require.Contains(t, secs, ".data")
	require.Contains(t, secs, ".rodata")
	vars := func(s *object.Section) []string {
		var names []string
		for _, v := range s.Vars {
			names = append(names, v.Name)
		}
		return names
	}
	assert.Equal(t, []string{"hits"}, vars(secs[".bss"]))
	assert.ElementsMatch(t, []string{"base", "where"}, vars(secs[".data"]), "static quiet is not published")
	assert.Equal(t, []string{"steps"}, vars(secs[".rodata"]))
	assert.True(t, secs[".rodata"].ReadOnly)
	assert.Nil(t, secs[".bss"].Data, ".bss is zeros")

	addr, span := obj.Layout(1 << 20)
	assert.GreaterOrEqual(t, span, secs[".bss"].Size+secs[".data"].Size+secs[".rodata"].Size)
	img, err := secs[".data"].Image(addr)
	require.NoError(t, err)
	for _, v := range secs[".data"].Vars {
		word := binary.LittleEndian.Uint64(img[v.Off:])
		switch v.Name {
		case "base":
			assert.Equal(t, uint64(1000), word)
		case "where":
			assert.Equal(t, addr[".bss"]+secs[".bss"].Vars[0].Off, word, "where = &hits")
		}
	}
	p, err := obj.Program("step")
	require.NoError(t, err)
	assert.Equal(t, []string{".bss", ".data", ".rodata"}, p.Globals())
	insns, err := loader.Link(p, addr)
	require.NoError(t, err)
	loads := 0
	for _, ins := range insns {
		if ins.OpCode.IsDWordLoad() {
			assert.Contains(t, addr, sectionAt(addr, uint64(ins.Constant)), "lddw %#x is in a section", ins.Constant)
			loads++
		}
	}
	assert.Positive(t, loads)
	_, err = loader.Load(insns, loader.Options{})
	assert.NoError(t, err, "verified")
	_, err = p.Link(nil, map[string]uint64{".bss": 1})
	assert.ErrorContains(t, err, "no address for section .data")
}

// sectionAt is the section of addr that a lies in (the one starting
// closest below it), or "".
func sectionAt(addr map[string]uint64, a uint64) string {
	best := ""
	for name, start := range addr {
		if start <= a && (best == "" || start > addr[best]) {
			best = name
		}
	}
	return best
}

// Found: of several programs, the alphabetically first was loaded silently.
// Each is one Program under its function name; Select keeps some; an
// unknown name is an error listing those there are.
func TestSeveralPrograms(t *testing.T) {
	obj := build(t, `#include "kflex.h"
KFLEX_PROG kflex_u64 zeta(const struct kflex_ctx *ctx) { return 1; }
KFLEX_PROG kflex_u64 alpha(const struct kflex_ctx *ctx) { return 2; }
__attribute__((section("kflex/other"), used)) kflex_u64 mid(const struct kflex_ctx *ctx) { return 3; }
kflex_u64 helper(kflex_u64 x) { return x; }`)
	assert.Equal(t, []string{"zeta", "alpha", "mid"}, obj.Names(), "functions in .text are not programs")
	assert.Equal(t, uint64(2), run(t, obj, "alpha", 0))
	assert.Equal(t, uint64(3), run(t, obj, "mid", 0))
	_, err := obj.Program("beta")
	assert.EqualError(t, err, obj.Name+`: no program "beta" (it has zeta, alpha, mid)`)
	sel, err := obj.Select("mid", "zeta")
	require.NoError(t, err)
	assert.Equal(t, []string{"zeta", "mid"}, sel.Names())
	assert.Len(t, obj.Programs, 3, "Select leaves the object as it was")
	_, err = obj.Select("zeta", "helper")
	assert.ErrorContains(t, err, `no program "helper"`)
}

// TestLockExterns: kflex_lock and kflex_unlock call mcs_lock and mcs_unlock,
// which the loader appends once each; an extern the runtime does not have
// is an error naming it.
func TestLockExterns(t *testing.T) {
	obj := build(t, `#include "kflex.h"
extern kflex_u64 mystery(void);
KFLEX_PROG kflex_s64 locked(const struct kflex_ctx *ctx, kflex_u64 len, struct kflex_lock *l)
{
	int r = kflex_lock(ctx, l);
	kflex_unlock(ctx, l);
	kflex_lock(ctx, l);
	kflex_unlock(ctx, l);
	return r;
}
KFLEX_PROG kflex_u64 odd(const struct kflex_ctx *ctx) { return mystery(); }`)
	p, err := obj.Program("locked")
	require.NoError(t, err)
	assert.Equal(t, []string{abi.LockFunc, abi.UnlockFunc}, p.Externs())
	insns := link(t, obj, "locked")
	count := map[string]int{}
	for _, ins := range insns {
		count[ins.Symbol()]++
	}
	assert.Equal(t, 1, count[abi.LockFunc])
	assert.Equal(t, 1, count[abi.UnlockFunc])
	res, err := loader.Load(insns, loader.Options{})
	require.NoError(t, err, "the verifier sees the lock taken and released")
	assert.NotEmpty(t, loader.Shielded(res.Verified.Program.Instructions(), abi.LockFunc, abi.UnlockFunc))

	odd, err := obj.Program("odd")
	require.NoError(t, err)
	_, err = loader.Link(odd, nil)
	assert.ErrorContains(t, err, "program odd calls mystery, which neither the object nor the runtime defines (the runtime links mcs_lock, mcs_unlock)")

	// A function of the object's own under the lock's name would be taken
	// for the lock (and shielded from cancels): refused.
	own := build(t, `#include "kflex.h"
__attribute__((noinline)) int mcs_unlock(struct kflex_lock *lock, kflex_u64 held, kflex_u64 node) { for (;;) ; }
KFLEX_PROG kflex_u64 sneaky(const struct kflex_ctx *ctx, kflex_u64 len, struct kflex_lock *l) { return mcs_unlock(l, 0, 0); }`)
	p, err = own.Program("sneaky")
	require.NoError(t, err)
	_, err = loader.Link(p, nil)
	assert.ErrorContains(t, err, "program sneaky: function mcs_unlock has the name of the runtime's own")
}

// TestRefused: what kflex cannot run is an error naming the object and
// what is wrong, never a panic.
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		flags     []string
		want      string
	}{
		{"map", `#include "kflex.h"
struct { int type; } counts __attribute__((section(".maps"), used));
KFLEX_PROG kflex_u64 f(const struct kflex_ctx *ctx) { return 0; }`, nil, "section .maps: BPF maps are not part of kflex's interface"},
		{"function pointer", `#include "kflex.h"
static __attribute__((noinline)) kflex_u64 g(kflex_u64 x) { return x; }
KFLEX_PROG kflex_u64 f(const struct kflex_ctx *ctx) { kflex_u64 (*volatile fp)(kflex_u64) = g; return fp(1); }`, nil,
			"loads the address of function"},
		{"extern variable", `#include "kflex.h"
extern kflex_u64 elsewhere;
KFLEX_PROG kflex_u64 f(const struct kflex_ctx *ctx) { return elsewhere; }`, nil, "loads the address of elsewhere, which the object does not define"},
		{"arena global", `#include "kflex.h"
kflex_u64 __attribute__((address_space(1))) shared;
KFLEX_PROG kflex_u64 f(const struct kflex_ctx *ctx) { return 0; }`, nil, "section .addr_space.1: arena globals"},
		{"no program", `#include "kflex.h"
kflex_u64 f(kflex_u64 x) { return x; }`, nil, "no program: put each program's function in a section"},
		{"other section", `#include "kflex.h"
__attribute__((section(".mine"), used)) kflex_u64 mine = 1;
KFLEX_PROG kflex_u64 f(const struct kflex_ctx *ctx) { return 0; }`, nil, "section .mine: not a section kflex loads"},
		{"big-endian", `int f(int x) { return x; }`, []string{"-target", "bpfeb"}, "kflex runs 64-bit little-endian ones"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := testutil.BuildC(t, "bad", tc.src, tc.flags...)
			_, err := object.Open(path)
			require.Error(t, err)
			assert.ErrorContains(t, err, path+": ")
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

// TestNotBPF: an ELF file for another machine (this test binary) is an
// error naming it.
func TestNotBPF(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	_, err = object.Open(self)
	assert.ErrorContains(t, err, self+": an ELF object for EM_")
	assert.ErrorContains(t, err, "not BPF (compile with clang -target bpf)")
}

// TestMalformed: bytes that are not a whole object are errors naming it.
func TestMalformed(t *testing.T) {
	good, err := os.ReadFile(testutil.BuildC(t, "ext", globalsSrc))
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("mov %r0, 0\nexit\n"),
		"truncated": good[:len(good)/2],
		"no header": good[64:],
	} {
		_, err := object.Read(name+".o", bytes.NewReader(b))
		assert.ErrorContains(t, err, name+".o: ", name)
	}
}

// FuzzRead: no input makes Read, Link or Image panic.
func FuzzRead(f *testing.F) {
	if hostprobe.Clang.Offered() == nil {
		b, err := os.ReadFile(testutil.BuildC(f, "seed", globalsSrc))
		require.NoError(f, err)
		f.Add(b)
	}
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		obj, err := object.Read("fuzz.o", bytes.NewReader(b))
		if err != nil {
			return
		}
		addr, _ := obj.Layout(4096)
		for _, p := range obj.Programs {
			loader.Link(p, addr)
		}
		for _, s := range obj.Sections {
			if s.Size <= 1<<20 {
				s.Image(addr)
			}
		}
	})
}

// TestHeaderIsABI: include/kflex.h states abi's numbers: the helpers a C
// program may call (not the lock's own), the context's fields in order,
// kflex_lock's results and the lock's subprograms.
func TestHeaderIsABI(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(t), "include", "kflex.h"))
	require.NoError(t, err)
	h := string(b)
	declared := map[string]int64{}
	for _, m := range regexp.MustCompile(`\(\*const kflex_(\w+)\)\([^)]*\) = \(void \*\)(0x[0-9a-f]+);`).FindAllStringSubmatch(h, -1) {
		n, err := strconv.ParseInt(m[2], 0, 64)
		require.NoError(t, err)
		declared[m[1]] = n
	}
	lockOwn := map[int32]bool{abi.HelperWake: true, abi.HelperSliceYield: true, abi.HelperRelax: true, abi.HelperLockCheck: true, abi.HelperFault: true}
	want := map[string]int64{}
	for id, p := range abi.Prototypes() {
		if !lockOwn[id] {
			want[p.Name] = int64(id)
		}
	}
	assert.Equal(t, want, declared, "helpers")

	body := regexp.MustCompile(`(?s)struct kflex_ctx \{(.*?)\};`).FindStringSubmatch(h)
	require.NotNil(t, body, "struct kflex_ctx")
	var fields []string
	for _, m := range regexp.MustCompile(`kflex_u64 (\w+);`).FindAllStringSubmatch(body[1], -1) {
		fields = append(fields, m[1])
	}
	var ctx []string
	for _, f := range abi.CtxFields {
		require.Equal(t, 8, f.Size, f.Name)
		ctx = append(ctx, f.Name)
	}
	assert.Equal(t, ctx, fields, "struct kflex_ctx")

	for name, v := range map[string]int{"KFLEX_LOCK_ACQUIRED": abi.LockAcquired, "KFLEX_LOCK_OWNER_DIED": abi.LockOwnerDied,
		"KFLEX_LOCK_NOT_RECOVERABLE": abi.LockNotRecoverable} {
		assert.Regexp(t, fmt.Sprintf(`#define %s \(?%d\)?\n`, name, v), h)
	}
	assert.Contains(t, h, "extern int "+abi.LockFunc+"(")
	assert.Contains(t, h, "extern int "+abi.UnlockFunc+"(")
	assert.Contains(t, abi.ConsistentCall, "mov %r0, -3", "kflex_consistent clears bit 1: ~2")
	assert.Contains(t, h, "__atomic_fetch_and(&lock->word, ~(kflex_u64)2,")
}
