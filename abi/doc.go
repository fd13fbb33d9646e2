// Package abi is the executor ABI, stated once: what an extension may assume
// when kflex's runtime runs it, and what every executor (the JIT, the
// interpreter) and every emitter of bytecode that calls into it (mcs's
// bytecode lock) must provide.
//
//   - helpers.go: the helpers by number, and each one's prototype (the kinds
//     of its arguments and of its result), in abi's own terms; the verifier's
//     configuration converts them (loader.Config).
//   - context.go: the context an extension gets, word by word (the invoker's
//     argument, then what the bytecode lock needs), its encoder, and the
//     bytecode that calls mcs_lock and mcs_unlock with it.
//   - engine.go: the registers at entry, the stack frames, the back-edge
//     budget, the may_goto budget, the terminate word, and the errors both
//     engines return (ErrCancelled, ErrNotSupported), so that errors.Is works
//     whichever engine ran the program.
//
// Layer 0: abi imports only the standard library. It sits this low because
// mcs's bytecode lock calls helpers and reads the context, and mcs stands
// below userspace, which applications link and which must not depend on the
// verifier or the engines; the engines, the verifier's configuration and the
// runtime (serve) sit above it and use it, so none restates a number.
package abi
