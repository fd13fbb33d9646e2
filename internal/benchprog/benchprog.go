// Package benchprog holds the extension programs kflex benchmarks every executor
// with (interpreter, JIT, kernel), as text for bytecode.Assemble, and the data
// they run on: a counter loop, a hash table's lookup and insert, a linked-list
// walk and a skip-list search.
//
// Layer 7 (program harnesses: internal/isatest, internal/progen,
// internal/benchprog): only tests, the harnesses of layer 8 and the commands
// import it.
//
// A program that works on the heap expects r6 to hold the address of its data,
// which Setup lays out. Every loop ends at a constant bound or at may_goto, so
// the kernel's verifier accepts the programs. Pointers loaded from the data are
// cast with addr_space_cast, as the kernel requires of arena pointers; Build
// drops the casts (within one view of the heap they change nothing) and
// BuildArena keeps them, so that kflex's executors and the kernel can run the
// same bytecode. An index is added to a pointer register, never a pointer to
// an index register: Linux before 7.x refuses arithmetic whose destination is
// a number and whose source an arena pointer ("pointer arithmetic on arena
// prohibited", seen on 6.12 and 6.18.15).
package benchprog

import (
	"encoding/binary"
	"math/bits"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
)

// Program is one benchmark program.
type Program struct {
	Name string
	Text string
	// Setup, for heap programs, writes the program's data into mem, which the
	// program sees at address base, and returns r6 and the expected result.
	// Running the program again gives the same result.
	Setup func(mem []byte, base uint64) (r6, want uint64)
}

// Data offsets within the heap region given to Setup (64 KiB in all).
const (
	lookupOff = 0
	insertOff = 16 << 10
	listOff   = 32 << 10
	skipOff   = 40 << 10
	// Size is how much heap the corpus needs.
	Size = 64 << 10
)

// Corpus is the benchmark programs.
var Corpus = []Program{
	{Name: "loop", Text: Loop},
	{Name: "hash-lookup", Text: HashLookup, Setup: setupLookup},
	{Name: "hash-insert", Text: HashInsert, Setup: setupInsert},
	{Name: "list-walk", Text: ListWalk, Setup: setupList},
	{Name: "skiplist-search", Text: SkipListSearch, Setup: setupSkipList},
}

// Loop is compute-bound: a linear-congruential generator mixed into r0 for
// 1000 rounds.
const Loop = `
	mov %r0, 0
	mov %r1, 1000
	mov %r2, 12345
loop:
	mul %r2, 1103515245
	add %r2, 12345
	mov %r3, %r2
	rsh %r3, 16
	xor %r0, %r3
	sub %r1, 1
	jne %r1, 0, loop
	exit`

// HashBuckets is the size of both hash tables.
const HashBuckets = 1024

func bucket(key uint64) uint64 { return uint64(uint32(key)*0x9e3779b1) >> 22 }

// HashLookup looks up 16 keys in an open-addressing table of 1024 16-byte
// buckets {key, value} at r6, probing up to 8 buckets per key, and returns the
// sum of the values found.
const HashLookup = `
	mov %r0, 0
	mov %r7, 0
outer:
	mov %r2, %r7
	mul %r2, 7
	add %r2, 1
	mov32 %r3, %r2
	mul32 %r3, 0x9e3779b1
	rsh32 %r3, 22
	mov %r8, 0
probe:
	mov %r1, %r3
	lsh %r1, 4
	mov %r4, %r6
	add %r4, %r1
	ldxdw %r5, [%r4+0]
	jeq %r5, %r2, found
	add %r3, 1
	and %r3, 1023
	add %r8, 1
	jlt %r8, 8, probe
	ja next
found:
	ldxdw %r5, [%r4+8]
	add %r0, %r5
next:
	add %r7, 1
	jlt %r7, 16, outer
	exit`

// put inserts key into the table in mem (open addressing, linear probing).
func put(mem []byte, key, val uint64) {
	b := bucket(key)
	for binary.LittleEndian.Uint64(mem[b*16:]) != 0 {
		b = (b + 1) % HashBuckets
	}
	binary.LittleEndian.PutUint64(mem[b*16:], key)
	binary.LittleEndian.PutUint64(mem[b*16+8:], val)
}

// FillHashTable puts the keys HashLookup looks up (1, 8, 15, ...) and as many
// others in the table at mem, so that probes collide, and returns the sum
// HashLookup must return.
func FillHashTable(mem []byte) (want uint64) {
	for i := uint64(0); i < 16; i++ {
		put(mem, 1000+i*3, 1)
		put(mem, i*7+1, i+100)
		want += i + 100
	}
	return want
}

func setupLookup(mem []byte, base uint64) (uint64, uint64) {
	return base + lookupOff, FillHashTable(mem[lookupOff:])
}

// HashInsert inserts or updates 16 keys (5000, 5013, ...) in a second table at
// r6 and returns the number of buckets it probed.
const HashInsert = `
	mov %r0, 0
	mov %r7, 0
outer:
	mov %r2, %r7
	mul %r2, 13
	add %r2, 5000
	mov32 %r3, %r2
	mul32 %r3, 0x9e3779b1
	rsh32 %r3, 22
probe:
	mov %r1, %r3
	lsh %r1, 4
	mov %r4, %r6
	add %r4, %r1
	ldxdw %r5, [%r4+0]
	add %r0, 1
	jeq %r5, %r2, store
	jeq %r5, 0, store
	add %r3, 1
	and %r3, 1023
	may_goto next
	ja probe
store:
	stxdw [%r4+0], %r2
	stxdw [%r4+8], %r7
next:
	add %r7, 1
	jlt %r7, 16, outer
	exit`

func setupInsert(mem []byte, base uint64) (uint64, uint64) {
	t := mem[insertOff : insertOff+HashBuckets*16]
	clear(t)
	for i := uint64(0); i < 48; i++ { // residents the probes must step over
		put(t, 5000+i*13+HashBuckets*16, 1)
	}
	want := uint64(0)
	sim := append([]byte(nil), t...)
	for i := uint64(0); i < 16; i++ {
		key := 5000 + i*13
		for b := bucket(key); ; b = (b + 1) % HashBuckets {
			want++
			k := binary.LittleEndian.Uint64(sim[b*16:])
			if k == key || k == 0 {
				binary.LittleEndian.PutUint64(sim[b*16:], key)
				break
			}
		}
	}
	return base + insertOff, want
}

// ListWalk follows a linked list of 256 nodes {next, value} from the head
// pointer at r6 and returns the sum of the values.
const ListWalk = `
	ldxdw %r1, [%r6+0]
	addr_space_cast %r1, %r1, 1
	mov %r0, 0
walk:
	jeq %r1, 0, done
	ldxdw %r3, [%r1+8]
	add %r0, %r3
	ldxdw %r1, [%r1+0]
	addr_space_cast %r1, %r1, 1
	may_goto done
	ja walk
done:
	exit`

func setupList(mem []byte, base uint64) (uint64, uint64) {
	const n = 256
	region := mem[listOff:]
	node := func(i int) uint64 { return uint64(16 + 16*((i*97)%n)) } // scattered order
	want := uint64(0)
	binary.LittleEndian.PutUint64(region[0:], base+listOff+node(0))
	for i := range n {
		next := uint64(0)
		if i+1 < n {
			next = base + listOff + node(i+1)
		}
		binary.LittleEndian.PutUint64(region[node(i):], next)
		binary.LittleEndian.PutUint64(region[node(i)+8:], uint64(i)*3)
		want += uint64(i) * 3
	}
	return base + listOff, want
}

// SkipListSearch searches 16 keys in a skip list of 256 nodes {key, value,
// next[4]} whose head node is at r6, and returns the sum of the values found.
const SkipListSearch = `
	mov %r0, 0
	mov %r7, 0
search:
	mov %r2, %r7
	mul %r2, 37
	and %r2, 255
	add %r2, 1
	mul %r2, 10
	mov %r1, %r6
	mov %r8, 3
level:
	mov %r9, %r8
	lsh %r9, 3
	mov %r4, %r1
	add %r4, %r9
step:
	ldxdw %r3, [%r4+16]
	addr_space_cast %r3, %r3, 1
	jeq %r3, 0, down
	ldxdw %r5, [%r3+0]
	jge %r5, %r2, down
	mov %r1, %r3
	mov %r9, %r8
	lsh %r9, 3
	mov %r4, %r1
	add %r4, %r9
	may_goto down
	ja step
down:
	jeq %r8, 0, check
	sub %r8, 1
	ja level
check:
	ldxdw %r3, [%r1+16]
	addr_space_cast %r3, %r3, 1
	jeq %r3, 0, next
	ldxdw %r5, [%r3+0]
	jne %r5, %r2, next
	ldxdw %r5, [%r3+8]
	add %r0, %r5
next:
	add %r7, 1
	jlt %r7, 16, search
	exit`

func setupSkipList(mem []byte, base uint64) (uint64, uint64) {
	const n, nodeSize = 256, 48
	region := mem[skipOff:]
	clear(region[:(n+1)*nodeSize])
	addr := func(i int) uint64 { return base + skipOff + uint64(i*nodeSize) } // node 0 is the head
	last := [4]int{}                                                          // the last node linked at each level
	for i := 1; i <= n; i++ {
		off := i * nodeSize
		binary.LittleEndian.PutUint64(region[off:], uint64(i*10))
		binary.LittleEndian.PutUint64(region[off+8:], uint64(i))
		for l := range min(bits.TrailingZeros(uint(i))+1, 4) {
			binary.LittleEndian.PutUint64(region[last[l]*nodeSize+16+8*l:], addr(i))
			last[l] = i
		}
	}
	want := uint64(0)
	for j := uint64(0); j < 16; j++ {
		want += (j*37)%256 + 1 // node (j*37 % 256)+1 holds that value
	}
	return base + skipOff, want
}

// Build assembles p for an engine that sees mem at address base: a heap
// program gets its data laid out in mem and starts by loading r6 with its
// address. It returns the program and the result it must compute (0 for one
// without data). The program's address-space casts are left out.
func (p Program) Build(mem []byte, base uint64) (asm.Instructions, uint64, error) {
	return p.build(p.Uncast(), mem, base, nil)
}

// Uncast is p's text without its address-space casts.
func (p Program) Uncast() string {
	var text strings.Builder
	for line := range strings.Lines(p.Text) {
		if !strings.Contains(line, "addr_space_cast") {
			text.WriteString(line)
		}
	}
	return text.String()
}

// BuildArena is Build for a heap in a BPF arena, the form the kernel accepts:
// the casts stay, and a heap program starts with ref (the lddw of the arena's
// map into r1 for the kernel, anything harmless for kflex's executors) and a
// cast of r6.
func (p Program) BuildArena(mem []byte, base uint64, ref asm.Instruction) (asm.Instructions, uint64, error) {
	cast := asm.Instruction{OpCode: asm.Mov.Op(asm.RegSource), Dst: asm.R6, Src: asm.R6, Offset: 1, Constant: 1}
	return p.build(p.Text, mem, base, asm.Instructions{ref, cast})
}

func (p Program) build(text string, mem []byte, base uint64, after asm.Instructions) (asm.Instructions, uint64, error) {
	insns, err := bytecode.Assemble(text)
	if err != nil || p.Setup == nil {
		return insns, 0, err
	}
	r6, want := p.Setup(mem, base)
	head := append(asm.Instructions{asm.LoadImm(asm.R6, int64(r6), asm.DWord)}, after...)
	return append(head, insns...), want, nil
}
