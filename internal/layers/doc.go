// Package layers holds kflex's layering test and nothing else: it reads the
// import graph (go list) and fails when a package imports one in its own layer
// or above, when a package is in no layer, or when a package of the
// application stack (what applications link: the heap, the lock, userspace)
// imports the BPF engines or cilium/ebpf. The layers are one table in
// layers_test.go; README.md's architecture table shows them.
//
// Layer 8 (harnesses over the whole runtime: bench, stress, examples,
// internal/layers): a test-only package, imported by nothing.
package layers
