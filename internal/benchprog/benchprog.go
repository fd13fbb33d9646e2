// Package benchprog holds the extension programs kflex benchmarks every executor
// with (interpreter, JIT, kernel), as text for bytecode.Assemble, and the data
// they run on.
package benchprog

import "encoding/binary"

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

// HashLookup looks up 16 keys in an open-addressing hash table of 1024
// 16-byte buckets {key, value} at the start of the heap (r6, which the caller
// sets), probing up to 8 buckets per key, and returns the sum of the values found.
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
	mov %r4, %r3
	lsh %r4, 4
	add %r4, %r6
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

// HashBuckets is the table size HashLookup assumes.
const HashBuckets = 1024

// FillHashTable puts keys 1, 8, 15, ... (those the program looks up) and as many
// other keys in the table, so that probes collide, and returns the sum
// HashLookup must return.
func FillHashTable(mem []byte) (want uint64) {
	put := func(key, val uint64) {
		b := uint64(uint32(key)*0x9e3779b1) >> 22
		for binary.LittleEndian.Uint64(mem[b*16:]) != 0 {
			b = (b + 1) % HashBuckets
		}
		binary.LittleEndian.PutUint64(mem[b*16:], key)
		binary.LittleEndian.PutUint64(mem[b*16+8:], val)
	}
	for i := uint64(0); i < 16; i++ {
		put(1000+i*3, 1)
		put(i*7+1, i+100)
		want += i + 100
	}
	return want
}

// Program is one benchmark program.
type Program struct {
	Name string
	Text string
	// Heap: the program expects r6 to point at a heap filled by FillHashTable.
	Heap bool
	// Want is its result, when it is known in advance (0: not checked).
	Want uint64
}

// Corpus returns the benchmark programs; want is FillHashTable's result for
// the heap they will run on.
func Corpus(want uint64) []Program {
	return []Program{
		{Name: "loop", Text: Loop},
		{Name: "hash-lookup", Text: HashLookup, Heap: true, Want: want},
	}
}
