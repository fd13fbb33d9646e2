package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/loader"
	"github.com/kflex-go/kflex/verifier"
)

func init() {
	commands["verify"] = command{summary: "verify a program for the extension runtime", run: runVerify}
}

// The verdicts of kflex verify --json, one per outcome.
const (
	verdictAccepted   = "accepted"
	verdictRejected   = "rejected"   // by the verifier's analysis or its graph checks
	verdictInvalid    = "invalid"    // not valid bytecode: nothing was analysed
	verdictUnreadable = "unreadable" // no program could be read from the file
	verdictError      = "error"      // the verifier failed otherwise (none expected)
)

// verifyReport is kflex verify's JSON output, the same keys for every
// verdict (the statistics are 0 unless it is accepted).
type verifyReport struct {
	Verdict        string       `json:"verdict"`
	Accepted       bool         `json:"accepted"`
	Error          *verifyError `json:"error,omitempty"`
	Log            []string     `json:"log,omitempty"`
	InsnsProcessed int          `json:"insns_processed"`
	States         int          `json:"states"`      // kept, at join and cancellation points
	PeakStates     int          `json:"peak_states"` // held at once
	GuardsTotal    int          `json:"guards_total"`
	GuardsElided   int          `json:"guards_elided"`
	CancelPoints   []int        `json:"cancel_points"`
	CancelTable    []cancelRow  `json:"cancel_table"` // what is held at each cancellation point
}

type cancelRow struct {
	Slot     int   `json:"slot"`
	Locks    int   `json:"locks"`
	LockRegs []int `json:"lock_regs"` // the register keeping each held lock's address (0: none known)
}

type verifyError struct {
	Insn   *int   `json:"insn,omitempty"` // none for an unreadable file
	Reason string `json:"reason"`
}

func runVerify(args []string, out io.Writer) error {
	fs := newFlags("verify", "[--json] [--ctx-size N] PROG", `Verify PROG (ELF object, OBJ:NAME for one of several programs; kflex assembler text or raw bytecode) as the extension
runtime would: the context of kflex serve (six read-only words; --ctx-size
replaces it with that many bytes, any access in bounds), its helpers (which
take numbers, not the context or frame pointers), and r3 at entry the
argument as a heap address (checked). Prints the verdict; on rejection the
instruction, the reason and the path to it, each instruction with the
registers before it; then statistics: instructions processed, states kept
(one per join point) and at peak, memory accesses (guards) and how many need
no guard, and the cancellation points with the locks (mcs_lock) held at each
and the register keeping each one's address. With --json, one object for every
outcome: verdict (accepted; rejected by the verifier; invalid, not valid
bytecode; unreadable, no program read from the file: a missing file, a bad
ELF object, assembler text that does not parse, raw bytes of a length not a
multiple of 8), accepted, error {insn, reason} (no insn when unreadable),
log, insns_processed, states, peak_states, guards_total, guards_elided,
cancel_points, cancel_table [{slot, locks, lock_regs}]; the statistics are
0 unless accepted. Exits 0 when the program is accepted, 1 when it is not
(rejected, invalid or unreadable; the reason also on stderr; verdict error
if the verifier failed otherwise), 2 on a bad command line (no JSON).`, out)
	asJSON := fs.Bool("json", false, "print one JSON object")
	ctxSize := fs.Int("ctx-size", abi.CtxSize, "bytes of context r1 points to (0 to 65536)")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if err := badFlags("verify", inRange("ctx-size", *ctxSize, 0, 1<<16)); err != nil {
		return err
	}
	rep := verifyReport{CancelPoints: []int{}, CancelTable: []cancelRow{}}
	insns, err := loadProgram(fs.Arg(0))
	if err != nil {
		if *asJSON {
			rep.Verdict, rep.Error = verdictUnreadable, &verifyError{Reason: err.Error()}
			if jerr := writeJSON(out, rep); jerr != nil {
				return jerr
			}
		}
		return err
	}
	cfg := loader.Config()
	if *ctxSize != abi.CtxSize {
		cfg.CtxSize, cfg.CtxFields = *ctxSize, nil // not the runtime's context: no layout to hold it to
	}
	var res *verifier.Result
	p, verr := loader.Load(insns, loader.Options{Config: &cfg})
	if verr == nil {
		res = p.Verified
	}
	var ve *verifier.Error
	switch {
	case verr == nil:
		rep.Verdict, rep.Accepted = verdictAccepted, true
		rep.InsnsProcessed, rep.States, rep.PeakStates = res.InsnsProcessed, res.States, res.PeakStates
		rep.GuardsTotal, rep.GuardsElided = res.GuardsTotal, res.GuardsElided
		rep.CancelPoints = res.CancelPoints
		for _, c := range res.CancelTable {
			rep.CancelTable = append(rep.CancelTable, cancelRow{c.Slot, c.Locks, c.LockRegs})
		}
	case errors.As(verr, &ve):
		rep.Verdict = verdictRejected
		if ve.Invalid != nil {
			rep.Verdict = verdictInvalid
		}
		rep.Error, rep.Log = &verifyError{Insn: &ve.Insn, Reason: ve.Reason}, ve.Log
	default: // not the program's fault; not expected
		rep.Verdict, rep.Error = verdictError, &verifyError{Reason: verr.Error()}
	}
	if *asJSON {
		if err := writeJSON(out, rep); err != nil {
			return err
		}
	} else if rep.Accepted {
		fmt.Fprintf(out, "%s: accepted\n  %d instructions processed, %d states kept, %d at peak\n  %d memory accesses, %d need no guard\n  cancellation points at %v\n",
			fs.Arg(0), rep.InsnsProcessed, rep.States, rep.PeakStates, rep.GuardsTotal, rep.GuardsElided, rep.CancelPoints)
		for _, c := range rep.CancelTable {
			if c.Locks > 0 {
				fmt.Fprintf(out, "    at %d: %d lock(s) held, addresses in %s\n", c.Slot, c.Locks, lockRegsText(c.LockRegs))
			}
		}
	} else if rep.Verdict != verdictError {
		printRejection(out, fs.Arg(0), ve)
	}
	switch rep.Verdict {
	case verdictError:
		return verr
	case verdictInvalid:
		return fmt.Errorf("verify: %s rejected: not valid bytecode", fs.Arg(0))
	case verdictRejected:
		return fmt.Errorf("verify: %s rejected", fs.Arg(0))
	}
	return nil
}

// printRejection prints the verifier's rejection of the program at path:
// the instruction and the reason, then the path to it, one instruction a
// line with the registers before it.
func printRejection(out io.Writer, path string, ve *verifier.Error) {
	fmt.Fprintf(out, "%s: rejected at instruction %d: %s\n", path, ve.Insn, ve.Reason)
	for _, l := range ve.Log {
		fmt.Fprintf(out, "  %s\n", l)
	}
}

// lockRegsText names the registers keeping held locks' addresses: "r6, r7",
// "?" for one that none is known to keep.
func lockRegsText(regs []int) string {
	names := make([]string, len(regs))
	for i, r := range regs {
		names[i] = "?"
		if r != 0 {
			names[i] = fmt.Sprintf("r%d", r)
		}
	}
	return strings.Join(names, ", ")
}
