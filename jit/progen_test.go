package jit_test

import (
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"

	"github.com/kflex-go/kflex/internal/progen"
	"github.com/kflex-go/kflex/internal/testutil"
)

// TestGeneratedCalls checks that the differential tests really exercise
// bpf-to-bpf calls: most generated programs with calls enabled contain one.
func TestGeneratedCalls(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	withCall := 0
	for range 200 {
		data := testutil.RandomBytes(rng, 600)
		src := progen.NewSource(data)
		progen.Context(src)
		for _, ins := range progen.GenerateWith(src, 64, progen.Options{Calls: true}) {
			if ins.OpCode.JumpOp() == asm.Call && ins.Src == 1 {
				withCall++
				break
			}
		}
	}
	assert.Greater(t, withCall, 50, "programs with a call out of 200")
}
