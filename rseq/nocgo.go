//go:build !cgo

package rseq

const cgoEnabled = false
