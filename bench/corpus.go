package bench

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/kernel"
)

// CorpusProgram is one benchmark program (benchprog.Corpus, and an empty
// program for the cost of entering one) in the form the kernel accepts, its
// data laid out in an arena: loaded into the kernel, and as the same bytecode
// for kflex's executors on that arena.
type CorpusProgram struct {
	Name    string
	Kernel  *kernel.Program  // an XDP program, for test runs
	Ours    asm.Instructions // for kflex's executors (no map reference)
	Want    uint64           // the result, where HasWant
	HasWant bool
}

// LoadCorpus lays out every benchmark program's data in a and loads the
// programs. The caller closes each Kernel program.
func LoadCorpus(a *kernel.Arena) ([]CorpusProgram, error) {
	progs := append([]benchprog.Program{{Name: "empty", Text: "mov %r0, 0\nexit"}}, benchprog.Corpus...)
	var out []CorpusProgram
	fail := func(err error) ([]CorpusProgram, error) {
		for _, p := range out {
			p.Kernel.Close()
		}
		return nil, err
	}
	for _, bc := range progs {
		mem := a.Bytes()[:benchprog.Size]
		kins, want, err := bc.BuildArena(mem, a.Base(), a.Ref(asm.R1))
		if err != nil {
			return fail(fmt.Errorf("%s: %w", bc.Name, err))
		}
		ours, _, err := bc.BuildArena(mem, a.Base(), asm.LoadImm(asm.R1, 0, asm.DWord))
		if err != nil {
			return fail(fmt.Errorf("%s: %w", bc.Name, err))
		}
		kp, err := kernel.Load(kins, kernel.XDP, nil)
		if err != nil {
			return fail(fmt.Errorf("%s in the kernel: %w", bc.Name, err))
		}
		out = append(out, CorpusProgram{Name: bc.Name, Kernel: kp, Ours: ours, Want: want, HasWant: bc.Setup != nil})
	}
	return out, nil
}

// Region is the arena as a kflex JIT machine's sandbox, its stacks and
// context copy in the upper half (LoadCorpus's data is in the lower).
func Region(a *kernel.Arena) jit.Region {
	return jit.Region{Base: a.Pointer(), Size: a.Size(), Canon: a.Base(), Scratch: a.Size() / 2}
}
