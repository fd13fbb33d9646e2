//go:build cgo

package rseq

// cgoEnabled: the build allows cgo, so threads may be glibc's (2.35+), which
// registers rseq on every thread it creates; such threads report Foreign.
const cgoEnabled = true
