package bench

import (
	"fmt"
	"strings"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/mcs"
	"github.com/kflex-go/kflex/verifier"
)

// lockUnlockPairs is how many lock+unlock pairs one run makes, so that the
// cost of entering the program weighs little.
const lockUnlockPairs = 8

// lockUnlockText takes and releases one free lock through the lock's kernel
// form; the addresses are lddw constants (XDP programs have no argument).
// MeasureLockUnlock repeats it lockUnlockPairs times before the exit.
const lockUnlockText = `
	lddw %%r1, %#x
	addr_space_cast %%r1, %%r1, 1
	lddw %%r2, %#x
	addr_space_cast %%r2, %%r2, 1
	mov %%r3, %d
	lddw %%r4, %#x
	lddw %%r5, %#x
	addr_space_cast %%r5, %%r5, 1
	call local mcs_lock
	jne %%r0, 0, out
	lddw %%r1, %#x
	addr_space_cast %%r1, %%r1, 1
	lddw %%r2, %#x
	lddw %%r3, %#x
	addr_space_cast %%r3, %%r3, 1
	call local mcs_unlock
`

// MeasureLockUnlock times an uncontended lock+unlock of the bytecode lock's
// kernel form, the same bytecode in the kernel (XDP test runs, the kernel's
// JIT) and in kflex's JIT (with the verifier's guards) on the same arena heap, about runs times each, and an
// empty program in both for the cost of entering them. Figures: lock_kernel_ns
// and lock_jit_ns, ns per lock+unlock pair with the entry taken off;
// empty_kernel_ns and empty_jit_ns, ns per run of the empty program; and
// lock_jit_vs_kernel, the ratio per pair.
func MeasureLockUnlock(runs int) (map[string]float64, error) {
	if err := kernel.HaveArena(); err != nil {
		return nil, err
	}
	a, err := kernel.NewArena(4 << 20)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	h, err := a.NewHeap(nil)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	p, err := mcs.Attach(h)
	if err != nil {
		return nil, err
	}
	defer p.Detach()
	n := p.TakeNode()
	defer p.GiveNode(n)
	lock, err := h.Alloc(16)
	if err != nil {
		return nil, err
	}
	scratch, err := h.Alloc(jit.ScratchSize)
	if err != nil {
		return nil, err
	}
	m, err := jit.NewMachineIn(jit.Region{Base: h.At(0), Size: h.Size(), Canon: h.CanonBase(), Scratch: scratch})
	if err != nil {
		return nil, err
	}
	defer m.Close()

	held := p.Held()
	text := strings.Repeat(fmt.Sprintf(lockUnlockText, h.Base()+lock, h.Base()+n.Off, n.Index+1, held,
		h.Base()+h.Header().NodeOff, h.Base()+lock, held, h.Base()+n.Off), lockUnlockPairs) + "out:\n\texit\n" + mcs.KernelLock
	figures := map[string]float64{}
	for name, src := range map[string]string{"lock": text, "empty": "mov %r0, 0\nexit"} {
		body, err := bytecode.Assemble(src)
		if err != nil {
			return nil, fmt.Errorf("%s program: %w", name, err)
		}
		kp, err := kernel.Load(append(asm.Instructions{a.Ref(asm.R0)}, body...), kernel.XDP, nil)
		if err != nil {
			return nil, fmt.Errorf("%s program in the kernel: %w", name, err)
		}
		defer kp.Close()
		// kflex compiles it as its runtime would: with the verifier's guards
		// (the casts of constants need none after them).
		ours := append(asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord)}, body...)
		lp, err := loader.Load(ours, loader.Options{JIT: true,
			Config: &verifier.Config{Helpers: map[int32]verifier.Helper{5: {Name: "ktime_get_ns"}}}})
		if err != nil {
			return nil, fmt.Errorf("%s program: %w", name, err)
		}
		jp := lp.JIT
		defer lp.Close()
		for range 3 { // alternate, so that a noisy moment hits both
			if r0, kd, err := kp.Bench(runs / 3); err != nil || r0 != 0 {
				return nil, fmt.Errorf("%s program in the kernel: r0 %d, %v", name, int32(r0), err)
			} else {
				figures[name+"_kernel_ns"] += max(float64(kd.Nanoseconds()), 1) / 3
			}
			start := time.Now()
			for range runs / 3 {
				if r0, err := m.Run(jp, nil); err != nil || r0 != 0 {
					return nil, fmt.Errorf("%s program in the JIT: r0 %d, %v", name, int32(r0), err)
				}
			}
			figures[name+"_jit_ns"] += float64(time.Since(start).Nanoseconds()) / float64(runs/3) / 3
		}
	}
	if *h.Uint64(lock) != 0 {
		return nil, fmt.Errorf("lock word %#x after the runs: not free", *h.Uint64(lock))
	}
	// Per pair, each side's entry cost taken off.
	for _, side := range []string{"jit", "kernel"} {
		figures["lock_"+side+"_ns"] = (figures["lock_"+side+"_ns"] - figures["empty_"+side+"_ns"]) / lockUnlockPairs
	}
	figures["lock_jit_vs_kernel"] = figures["lock_jit_ns"] / figures["lock_kernel_ns"]
	return figures, nil
}
