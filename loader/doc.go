// Package loader is the one pipeline from bytecode to runnable programs:
// validate and encode once (bytecode.Program), verify with the runtime's
// configuration (Config: abi's context, helpers and entry registers, as the
// verifier takes them), turn the verifier's findings into the JIT's guard
// choices (AccessModes), and compile for the JIT and prepare for the
// interpreter from that one validated form. The runtime (serve), the CLI
// (kflex verify) and the kernel comparison's tests load through it. Link
// (link.go) turns a program of an ELF object (package object) into bytecode:
// its globals at the addresses given, its calls to the runtime's Externs
// (the bytecode lock's mcs_lock and mcs_unlock) linked to the lock's own
// subprograms.
//
// Layer 5: above the engines (jit, jit/interp) and the verifier, below serve.
package loader
