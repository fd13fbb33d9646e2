package loader

import (
	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
	"github.com/kflex-go/kflex/verifier"
)

// Config is the environment the runtime verifies extensions for: its context
// (abi.CtxFields), its helpers (Prototypes), the pointer argument in r3
// (abi.RegArg) and the bytecode lock's subprograms, whose locks must be
// released on every path.
func Config() verifier.Config {
	return verifier.Config{CtxSize: abi.CtxSize, CtxFields: CtxFields(), Helpers: Prototypes(), EntryArg: true,
		LockFunc: abi.LockFunc, UnlockFunc: abi.UnlockFunc}
}

// Prototypes are the helpers an extension may call (abi.Prototypes), as the
// verifier checks them.
func Prototypes() map[int32]verifier.Helper {
	params := map[abi.Arg]verifier.Param{abi.ArgAny: verifier.ParamAny, abi.ArgNumber: verifier.ParamNumber, abi.ArgNonNull: verifier.ParamNonNull}
	out := map[int32]verifier.Helper{}
	for id, p := range abi.Prototypes() {
		h := verifier.Helper{Name: p.Name, Args: len(p.Args), HeapOrNull: p.Ret == abi.RetHeapOrNull}
		for _, a := range p.Args {
			h.Params = append(h.Params, params[a])
		}
		out[id] = h
	}
	return out
}

// CtxFields is the context's layout (abi.CtxFields) for the verifier.
func CtxFields() []verifier.CtxField {
	var out []verifier.CtxField
	for _, f := range abi.CtxFields {
		out = append(out, verifier.CtxField{Name: f.Name, Off: f.Off, Size: f.Size, Writable: f.Writable})
	}
	return out
}

// AccessModes turns the verifier's findings into the JIT's guard choices.
func AccessModes(res *verifier.Result) []jit.AccessMode {
	modes := make([]jit.AccessMode, len(res.Access))
	for i, acc := range res.Access {
		switch acc {
		case verifier.StackAccess, verifier.CtxAccess, verifier.HeapChecked:
			modes[i] = jit.NoGuard
		case verifier.HeapSanitize:
			modes[i] = jit.SanitizeInPlace
		}
	}
	return modes
}

// Options say what to load a program for.
type Options struct {
	JIT    bool // compile it (jit.Program)
	Interp bool // prepare it for the interpreter (interp.Program)
	// Config, if set, replaces the runtime's verifier configuration (Config).
	Config *verifier.Config
}

// Program is one program loaded: the verifier's analysis (whose Program is
// the validated form both engines were made from), and what Options asked
// for.
type Program struct {
	Verified *verifier.Result
	JIT      *jit.Program    // with Options.JIT
	Interp   *interp.Program // with Options.Interp
}

// Load validates insns once, verifies them, and compiles them with the
// verifier's guard choices for the engines o names. Errors are the failing
// step's own: a rejection is a *verifier.Error.
func Load(insns asm.Instructions, o Options) (*Program, error) {
	cfg := Config()
	if o.Config != nil {
		cfg = *o.Config
	}
	res, err := verifier.Verify(insns, cfg)
	if err != nil {
		return nil, err
	}
	p := &Program{Verified: res}
	shielded := Shielded(res.Program.Instructions(), cfg.LockFunc, cfg.UnlockFunc)
	if o.JIT {
		if p.JIT, err = jit.CompileProgram(res.Program, jit.Options{Access: AccessModes(res), Shielded: shielded}); err != nil {
			return nil, err
		}
	}
	if o.Interp {
		if p.Interp, err = interp.PrepareWith(res.Program, interp.Options{Shielded: shielded}); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// Close frees the compiled code, if any.
func (p *Program) Close() error {
	if p.JIT == nil {
		return nil
	}
	return p.JIT.Close()
}

// Shielded are the slot ranges of the subprograms named (the lock's: a cancel
// must not stop them halfway, between a store of the lock protocol and the
// next; they leave by themselves, their helper returning an error wrapping
// abi.ErrCancelled once the queue no longer holds the waiter). A subprogram
// runs from its symbol to the next symbol or the end.
func Shielded(insns asm.Instructions, names ...string) []interp.Range {
	want := map[string]bool{}
	for _, n := range names {
		if n != "" {
			want[n] = true
		}
	}
	var out []interp.Range
	slot, open := 0, -1
	for _, ins := range insns {
		if sym := ins.Symbol(); sym != "" {
			if open >= 0 {
				out = append(out, interp.Range{Start: open, End: slot})
				open = -1
			}
			if want[sym] {
				open = slot
			}
		}
		slot += int(ins.Width())
	}
	if open >= 0 {
		out = append(out, interp.Range{Start: open, End: slot})
	}
	return out
}
