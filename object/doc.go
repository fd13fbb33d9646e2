// Package object reads extensions as C compilers write them: ELF relocatable
// objects for the BPF target (clang -target bpf -c), little-endian, with their
// symbols and relocations. It is kflex's own reader, on debug/elf, not
// cilium/ebpf's (RATIONALE.md says why): it accepts exactly what kflex can
// run and names the object, section, function and instruction of anything
// else.
//
// Layer 2 (beside mcs and the verifier): it stands on bytecode and abi; the
// loader links what it reads, and the runtime (serve) and the CLI use it.
//
// # What an object holds
//
//   - Programs: every global function in an executable section other than
//     .text (SEC("kflex") in C; include/kflex.h's KFLEX_PROG), by its function
//     name. Functions in .text, and static ones anywhere, are subprograms
//     only: a program carries the functions it calls (bpf-to-bpf calls,
//     resolved here, across sections), each starting with its name as a
//     symbol, as the verifier and loader.Shielded expect.
//   - Helper calls: "call N" with N one of abi's helper numbers
//     (0x4b46xxxx), as include/kflex.h declares them. They need no
//     relocation and pass through unchanged.
//   - Externs: calls to functions the object declares but does not define.
//     The loader links the runtime's own (loader.Externs: the bytecode lock's
//     mcs_lock and mcs_unlock, which include/kflex.h's kflex_lock and
//     kflex_unlock call), appended once each to the programs that call them.
//   - Globals: the sections .data, .rodata and .bss (and their .name
//     variants, such as the string literals' .rodata.str1.1). Each section
//     becomes one object in the shared heap, allocated and initialised at
//     load (serve), and the lddw of every reference to it gets its address
//     (Program.Link). Pointer initialisers (a global holding another's
//     address) are resolved too (Section.Image). The sections' global
//     variables (Section.Vars) are what applications find by name
//     (userspace.Client.Global).
//
// Refused, with the reason: objects that are not 64-bit little-endian BPF
// relocatable ELF; BPF maps (a maps or .maps section: kflex's globals live in
// the heap instead); arena globals (.addr_space.N sections); function
// pointers (lddw of a function); calls into the middle of a function;
// relocation types other than those above; any other allocated section.
// Sections that are not loaded (BTF, debug information, the license) are
// ignored.
package object
