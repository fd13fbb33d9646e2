package kernel

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/mcs"
)

// lockUnlockText takes and releases one free lock through the lock's kernel
// form; the addresses are lddw constants (XDP programs have no argument).
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
out:
	exit
`

// MeasureLockUnlock times an uncontended lock+unlock of the bytecode lock's
// kernel form, the same bytecode in the kernel (XDP test runs, the kernel's
// JIT) and in kflex's JIT on the same arena heap, about runs times each, and an
// empty program in both for the cost of entering them. Figures (ns per run):
// lock_kernel_ns, lock_jit_ns, empty_kernel_ns, empty_jit_ns, and
// lock_jit_vs_kernel, the ratio with each side's entry cost taken off.
func MeasureLockUnlock(runs int) (map[string]float64, error) {
	if err := HaveArena(); err != nil {
		return nil, err
	}
	a, err := NewArena(4 << 20)
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

	held := mcs.Held(p.Slot())
	text := fmt.Sprintf(lockUnlockText, h.Base()+lock, h.Base()+n.Off, n.Index+1, held,
		h.Base()+h.Header().NodeOff, h.Base()+lock, held, h.Base()+n.Off) + mcs.KernelLock
	figures := map[string]float64{}
	for name, src := range map[string]string{"lock": text, "empty": "mov %r0, 0\nexit"} {
		body, err := bytecode.Assemble(src)
		if err != nil {
			return nil, fmt.Errorf("%s program: %w", name, err)
		}
		kp, err := Load(append(asm.Instructions{a.Ref(asm.R0)}, body...), XDP, nil)
		if err != nil {
			return nil, fmt.Errorf("%s program in the kernel: %w", name, err)
		}
		defer kp.Close()
		jp, err := jit.Compile(append(asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord)}, body...))
		if err != nil {
			return nil, fmt.Errorf("%s program: %w", name, err)
		}
		defer jp.Close()
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
	figures["lock_jit_vs_kernel"] = (figures["lock_jit_ns"] - figures["empty_jit_ns"]) /
		max(figures["lock_kernel_ns"]-figures["empty_kernel_ns"], 1)
	return figures, nil
}
