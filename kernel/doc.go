// Package kernel runs kflex bytecode in the Linux kernel: the reference every
// other executor is checked against, and the baseline the JIT is measured
// against.
//
// Layer 6 (serve, kernel): the oracle imports neither the runtime nor the
// engines it checks; the comparisons live in package bench.
//
// Programs are encoded by package bytecode and loaded with a raw BPF_PROG_LOAD,
// not through cilium/ebpf's loader: cilium/ebpf v0.22.0 encodes every atomic
// instruction with a zero immediate (a compare-and-exchange becomes an add) and
// clears the offset of addr_space_cast. The loaded file descriptor is then wrapped
// by cilium/ebpf, which also creates the maps (the BPF arena) and runs programs
// with BPF_PROG_TEST_RUN. The workaround lives in load.go alone; bytecode's tests
// show the upstream bug, so it can go when cilium/ebpf is fixed.
//
// Two program types are used. Syscall programs (sleepable) take an arbitrary
// context buffer, may read and write it, and return it: the differential tests
// use them. XDP programs support repeated test runs, which give the kernel's
// per-iteration time: the benchmarks use them.
//
// An Arena is a BPF arena mapped into this process at an address aligned to its
// size, with every page populated: the kernel silently drops stores to, and reads
// zero from, arena pages nobody allocated or touched.
package kernel
