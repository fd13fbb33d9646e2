//go:build !amd64

package mcs

func pause(n uint32) {
	for range n {
	}
}
