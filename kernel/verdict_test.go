package kernel

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/progen"
	"github.com/kflex-go/kflex/internal/testutil"
	"github.com/kflex-go/kflex/verifier"
)

// bodyStart is where a generated program's body begins: after the move of the
// context to r9, nine register loads and eight stack stores. No jump crosses
// it, so instructions inserted there leave every jump offset right.
const bodyStart = 1 + 9 + 8

// verdictMutation turns a generated program (accepted by both verifiers) into
// one that tests a rule. differs, if set, is the documented difference (the
// table in the verifier package's doc) that makes the verdicts disagree:
// "kflex" means kflex accepts what Linux rejects, "linux" the other way round.
//
// linuxChanged, if set, marks a case on which Linux's verifier has answered
// differently on different kernels while kflex's answer stays: it is the
// verdict (spelt as differs) on the kernels where differs' is not seen, and
// the case's comment says which kernels gave which. Either passes, but
// kflex's own answer is pinned (accept where one of the two is "kflex",
// reject where one is "linux"), and every program of the case must get the
// same verdict on one kernel.
type verdictMutation struct {
	name         string
	mutate       func(asm.Instructions, *rand.Rand) asm.Instructions
	differs      string
	linuxChanged string
}

// want is the verdict m expects, or the two it allows where Linux changed.
func (m verdictMutation) want() []string {
	want := []string{"agree"}
	if m.differs != "" {
		want[0] = m.differs
	}
	if m.linuxChanged != "" {
		want = append(want, m.linuxChanged)
	}
	return want
}

// kflexAccepts is kflex's own answer on a case where Linux's changed: the
// one of the two verdicts that is not "agree" says it.
func (m verdictMutation) kflexAccepts() bool {
	return m.differs == "kflex" || m.linuxChanged == "kflex"
}

// neverLoaded replaces the prologue's load of register r with ja +0.
func neverLoaded(p asm.Instructions, r int) asm.Instructions {
	p = append(asm.Instructions{}, p...)
	p[1+r] = asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource)}
	return p
}

func insertAtBody(insns asm.Instructions, more ...asm.Instruction) asm.Instructions {
	out := append(asm.Instructions{}, insns[:bodyStart]...)
	out = append(out, more...)
	return append(out, insns[bodyStart:]...)
}

// guardedStore inserts test (instructions ending in a conditional jump to
// +1) and, on its taken side only, a store above the frame: a program both
// verifiers accept exactly when their range analysis proves the jump never
// taken.
func guardedStore(test string) func(asm.Instructions, *rand.Rand) asm.Instructions {
	return func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		more, err := bytecode.Assemble(test + "\nja +1\nstb [%r10+0], 0")
		if err != nil {
			panic(err)
		}
		return insertAtBody(p, more...)
	}
}

// localCall is a bpf-to-bpf call to the slot off after the next.
func localCall(off int32) asm.Instruction {
	return asm.Instruction{OpCode: asm.Call.Op(asm.ImmSource), Src: bytecode.CallLocal, Constant: int64(off)}
}

// callChain makes the body's last act, before its exit, a chain of calls
// frames deep (main's frame included): subprograms appended after the exit,
// each running body and calling the next, the last returning 0. frames 0
// makes one subprogram that calls itself.
func callChain(frames int, body ...asm.Instruction) func(asm.Instructions, *rand.Rand) asm.Instructions {
	return func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		out := append(append(asm.Instructions{}, p[:len(p)-1]...), localCall(1), asm.Return())
		if frames == 0 {
			return append(out, localCall(-1), asm.Return())
		}
		for k := 1; k < frames; k++ {
			out = append(out, body...)
			if k < frames-1 {
				out = append(out, localCall(1), asm.Return())
			} else {
				out = append(out, asm.Mov.Imm(asm.R0, 0), asm.Return())
			}
		}
		return out
	}
}

var verdictMutations = []verdictMutation{
	{name: "unchanged", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions { return p }},
	{name: "a register never loaded", mutate: func(p asm.Instructions, rng *rand.Rand) asm.Instructions {
		// Not r1: left the context pointer, it is spilled and partly reloaded,
		// which Linux rejects ("invalid size of register fill") and kflex reads
		// as a number (stack reloads are numbers: see the verifier's doc).
		r := []int{0, 3, 4, 5, 6, 7, 8}[rng.IntN(7)]
		return neverLoaded(p, r)
	}},
	{name: "r2 never loaded", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return neverLoaded(p, 2) // kflex's r2 at entry is the context's length
	}, differs: "kflex"},
	{name: "store below the frame", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.StoreMem(asm.R10, -520, asm.R1, asm.DWord))
	}},
	{name: "load above the frame", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.LoadMem(asm.R1, asm.R10, 0, asm.DWord))
	}},
	{name: "uninitialised stack read", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.LoadMem(asm.R1, asm.R10, -256, asm.DWord))
	}, differs: "linux"},
	{name: "write to r10", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.Mov.Imm(asm.R10, 0))
	}},
	{name: "exit without r0", mutate: func(asm.Instructions, *rand.Rand) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.Return()}
	}},
	{name: "code after the exit", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return append(append(asm.Instructions{}, p...), asm.Mov.Imm(asm.R0, 0), asm.Return())
	}},
	{name: "unknown helper", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.BuiltinFunc(9999).Call())
	}},
	{name: "a helper both know, after the body", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		// Before the final exit: nothing after it reads r1-r5, which the call
		// clobbers.
		return append(append(asm.Instructions{}, p[:len(p)-1]...), asm.FnKtimeGetNs.Call(), p[len(p)-1])
	}},
	{name: "a helper both know, then a clobbered register", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return append(append(asm.Instructions{}, p[:len(p)-1]...), asm.FnKtimeGetNs.Call(), asm.Mov.Reg(asm.R0, asm.R1), p[len(p)-1])
	}},
	{name: "bounded loop", mutate: func(p asm.Instructions, rng *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.Mov.Imm(asm.R1, int32(1+rng.IntN(20))),
			asm.Sub.Imm(asm.R1, 1), asm.Instruction{OpCode: asm.JNE.Op(asm.ImmSource), Dst: asm.R1, Offset: -2})
	}},
	{name: "endless loop", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		// loop: jeq r1, 0, +1; ja loop. Ends at once or never.
		return insertAtBody(p, asm.Instruction{OpCode: asm.JEq.Op(asm.ImmSource), Dst: asm.R1, Offset: 1},
			asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: -2})
	}, differs: "kflex"},
	{name: "a loop with no way out", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		// jne r1, 7, +1; ja +1; ja -1: on one side a loop that never ends.
		return insertAtBody(p, asm.Instruction{OpCode: asm.JNE.Op(asm.ImmSource), Dst: asm.R1, Offset: 1, Constant: 7},
			asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: 1},
			asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: -1})
	}},
	{name: "recursion", mutate: callChain(0)},
	{name: "eight frames", mutate: callChain(8)},
	// Linux 6.12.57, 6.18.15 and 6.18.44 refuse a ninth frame ("the call
	// stack of 9 frames is too deep", E2BIG); 7.3.4 accepts it (it allows
	// 16 frames). kflex refuses it: its engines have abi.MaxFrames (8).
	{name: "nine frames", mutate: callChain(9), linuxChanged: "linux"},
	{name: "eight frames of 512 bytes", mutate: callChain(8, asm.Instruction{OpCode: asm.StoreImmOp(asm.DWord), Dst: asm.R10, Offset: -512}),
		differs: "kflex"}, // Linux: at most 512 bytes of stack for the chain
	{name: "context read past its size", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.LoadMem(asm.R1, asm.R9, progen.CtxSize, asm.DWord))
	}, differs: "linux"},
	{name: "context pointer plus a number", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.Mov.Reg(asm.R2, asm.R9), asm.Add.Reg(asm.R2, asm.R1),
			asm.LoadMem(asm.R1, asm.R2, 0, asm.DWord))
	}},
	{name: "division by zero immediate", mutate: func(p asm.Instructions, _ *rand.Rand) asm.Instructions {
		return insertAtBody(p, asm.Div.Imm(asm.R1, 0))
	}, differs: "kflex"},
	// Range analysis: a store on a path the bounds rule out (accepted by
	// both) or allow (rejected by both).
	{name: "bounds: a byte is below 256", mutate: guardedStore("ldxb %r1, [%r9+0]\njgt %r1, 255, +1")},
	{name: "bounds: a sign-extended byte is not", mutate: guardedStore("ldxbsx %r1, [%r9+0]\njgt %r1, 255, +1")},
	{name: "bounds: a sign-extended byte is above -129", mutate: guardedStore("ldxbsx %r1, [%r9+0]\njslt %r1, -128, +1")},
	{name: "bounds: a half-word is not negative in 32 bits", mutate: guardedStore("ldxh %r1, [%r9+0]\njslt32 %r1, 0, +1")},
	{name: "bounds: a word may be", mutate: guardedStore("ldxw %r1, [%r9+0]\njslt32 %r1, 0, +1")},
	{name: "bounds: a register holding the bound", mutate: guardedStore("ldxb %r1, [%r9+0]\nmov %r2, 255\njgt %r1, %r2, +1")},
	{name: "bounds: the sum of two bytes", mutate: guardedStore("ldxb %r1, [%r9+0]\nldxb %r2, [%r9+1]\nadd %r1, %r2\njgt %r1, 510, +1")},
	{name: "bounds: a difference may wrap", mutate: guardedStore("ldxb %r1, [%r9+0]\nldxb %r2, [%r9+1]\nsub %r1, %r2\njgt %r1, 255, +1")},
	{name: "bounds: a signed difference does not", mutate: guardedStore("ldxb %r1, [%r9+0]\nldxb %r2, [%r9+1]\nsub %r1, %r2\njsgt %r1, 255, +1")},
	// A byte with its low bit set, swapped to the top, is at least 1<<56:
	// kflex moves a tnum's known bits with the bytes (verifier/alu.go) and
	// proves the jump never taken. Linux 6.12.57 and 6.18.15 leave a byte
	// swap's result unknown and refuse the store; 7.3.4 swaps the tnum but
	// compares with unsigned bounds not narrowed by it (umin stays 0), and
	// refuses too; the host's 6.18.44 (a custom build) narrows them and
	// agrees.
	{name: "bounds: a byte swapped to the top", mutate: guardedStore("ldxb %r1, [%r9+0]\nor %r1, 1\nbe64 %r1\njlt %r1, 0x1000000, +1"),
		differs: "kflex", linuxChanged: "agree"},
	// Linux 6.12.57, 6.18.15 and 6.18.44 leave a 32-bit division's or
	// modulo's result unknown on 64 bits; kflex zero-extends it like every
	// 32-bit result (found by generating ranges at random and comparing the
	// verdicts). 7.3.4 bounds it, zero-extended, and agrees.
	{name: "bounds: a 32-bit signed quotient is not negative", mutate: guardedStore("ldxw %r1, [%r9+0]\nsdiv32 %r1, 3\njslt %r1, 0, +1"),
		differs: "kflex", linuxChanged: "agree"},
	{name: "bounds: a 32-bit signed remainder is not negative", mutate: guardedStore("ldxw %r1, [%r9+0]\nsmod32 %r1, 3\njslt %r1, 0, +1"),
		differs: "kflex", linuxChanged: "agree"},
	{name: "bounds: a 32-bit unsigned quotient is not negative", mutate: guardedStore("ldxw %r1, [%r9+0]\ndiv32 %r1, 3\njslt %r1, 0, +1"),
		differs: "kflex", linuxChanged: "agree"},
}

// TestVerifierVerdicts compares kflex's verifier with Linux's on generated
// programs (progen's subset: no heap, forward jumps, no helpers) and on the
// same programs mutated to break one rule each, or to hide a store above the
// frame on a path only range analysis rules out (the verifier before the four
// intervals disagreed with Linux on three of those ten). Verdicts must agree except
// where a documented difference says otherwise, and then exactly as it says;
// where Linux's verifier changed between kernels, as one of them says.
func TestVerifierVerdicts(t *testing.T) {
	requireKernel(t)
	var uts unix.Utsname
	require.NoError(t, unix.Uname(&uts))
	release := unix.ByteSliceToString(uts.Release[:])
	rng := rand.New(rand.NewPCG(9, 9))
	const programs = 8
	// The helper both know: Linux's bpf_ktime_get_ns, by its number.
	cfg := verifier.Config{CtxSize: progen.CtxSize, Helpers: map[int32]verifier.Helper{5: {Name: "ktime_get_ns"}}}
	for _, m := range verdictMutations {
		t.Run(m.name, func(t *testing.T) {
			verdicts := map[string]int{}
			seen := ""
			for range programs {
				src := progen.NewSource(testutil.RandomBytes(rng, 512))
				progen.Context(src)
				insns := m.mutate(progen.Generate(src, diffBodyLen), rng)
				_, ours := verifier.Verify(insns, cfg)
				var theirs error
				if err := bytecode.Validate(insns); err != nil {
					theirs = err // the kernel would reject it before verifying
				} else {
					pace()
					kp, err := Load(insns, Syscall, nil)
					if err == nil {
						kp.Close()
					}
					var ve *VerifierError
					if err != nil && !errors.As(err, &ve) {
						require.NoError(t, err)
					}
					theirs = err
				}
				got := "agree"
				switch {
				case ours == nil && theirs != nil:
					got = "kflex"
				case ours != nil && theirs == nil:
					got = "linux"
				}
				verdicts[fmt.Sprintf("kflex %v / linux %v", ours == nil, theirs == nil)]++
				want := m.want()
				if !assert.Contains(t, want, got, "kflex: %v\nlinux: %v\n%v", ours, theirs, insns) {
					return
				}
				if m.linuxChanged != "" {
					if !assert.Equal(t, m.kflexAccepts(), ours == nil, "kflex's answer, whatever Linux's: %v\n%v", ours, insns) ||
						(seen != "" && !assert.Equal(t, seen, got, "one verdict per kernel: linux: %v\n%v", theirs, insns)) {
						return
					}
					seen = got
				}
			}
			t.Logf("accepted by %v", verdicts)
			if m.linuxChanged != "" {
				t.Logf("Linux %s: %q (the case allows %q)", release, seen, m.want())
			}
		})
	}
}

// TestKernelTextMatchesLinux: bytecode.KernelText writes every instruction of
// testdata/disasm.s (one of each form) as Linux's verifier log does, read
// from the log of its rejection: the path the verifier took first, which
// follows every may_goto's jump before its fall-through (the file's may_goto
// jumps over one instruction: Linux 6.12 refuses may_goto +0).
func TestKernelTextMatchesLinux(t *testing.T) {
	requireKernel(t)
	src, err := os.ReadFile("testdata/disasm.s")
	require.NoError(t, err)
	insns, err := bytecode.Assemble(string(src))
	require.NoError(t, err)
	raw, err := bytecode.Encode(insns)
	require.NoError(t, err)
	slots := bytecode.DecodeSlots(raw)
	_, err = Load(insns, Syscall, nil)
	var ve *VerifierError
	require.ErrorAs(t, err, &ve)
	line := regexp.MustCompile(`^(\d+): \(([0-9a-f]{2})\) (.*?)\s*(;.*)?$`)
	helpers := func(id int32) string { return map[int32]string{5: "bpf_ktime_get_ns"}[id] }
	// The first path: straight on (every other jump is +0) but for may_goto,
	// to the rejected instruction before the final exit.
	var path []int
	for pc := 0; pc < len(slots)-1; {
		path = append(path, pc)
		switch {
		case slots[pc].Op == mayGoto:
			pc += 1 + int(slots[pc].Off)
		case slots[pc].Op == bytecode.OpLdDW:
			pc += 2
		default:
			pc++
		}
	}
	var logged []int
	for _, l := range ve.Log {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		pc, _ := strconv.Atoi(m[1])
		require.Less(t, pc, len(slots), l)
		assert.Equal(t, m[2], fmt.Sprintf("%02x", slots[pc].Op), "opcode at %d", pc)
		assert.Equal(t, m[3], bytecode.KernelText(slots[pc], helpers), "instruction %d", pc)
		logged = append(logged, pc)
	}
	assert.Equal(t, path, logged, "every instruction of the first path, up to the rejected one, is in the log")
	t.Logf("%d instructions compared", len(logged))
}

// mayGoto is may_goto's opcode (BPF_JMP | BPF_JCOND | BPF_K).
const mayGoto = 0xe5
