// Package isatest reads kflex's ISA test files (testdata/isa/*.data), which use
// the layout of the public bpf_conformance suite:
//
//	-- asm        the program, in bytecode.Assemble syntax
//	-- raw        or the program as 64-bit little-endian slot values
//	-- mem        input memory: hex bytes, r1 points to a copy, r2 is its length
//	-- result     the expected r0
//	-- error      or a substring of the expected error
//
// Lines starting with '#' outside the program are comments.
//
// Layer 7 (program harnesses: internal/isatest, internal/progen,
// internal/benchprog): only tests, the harnesses of layer 8 and the commands
// import it.
package isatest

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/jit/interp"
)

// Case is one test file.
type Case struct {
	Name   string
	Raw    []byte // the program's bytecode
	Mem    []byte
	Result uint64
	Error  string // non-empty: the run must fail with this in its message
}

// Load reads every *.data file in dir.
func Load(dir string) ([]Case, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.data"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.data files in %s", dir)
	}
	var cases []Case
	for _, f := range files {
		c, err := Parse(f)
		if err != nil {
			return nil, err
		}
		cases = append(cases, c)
	}
	return cases, nil
}

// Parse reads one test file.
func Parse(path string) (Case, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return Case{}, err
	}
	c := Case{Name: strings.TrimSuffix(filepath.Base(path), ".data")}
	sections := map[string]*strings.Builder{}
	var cur *strings.Builder
	for _, line := range strings.Split(string(text), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "-- "); ok {
			cur = &strings.Builder{}
			sections[strings.TrimSpace(name)] = cur
			continue
		}
		if cur != nil {
			cur.WriteString(line + "\n")
		}
	}
	fail := func(format string, args ...any) (Case, error) {
		return Case{}, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	switch {
	case sections["asm"] != nil:
		insns, err := bytecode.Assemble(sections["asm"].String())
		if err != nil {
			return fail("%v", err)
		}
		if c.Raw, err = bytecode.Encode(insns); err != nil {
			return fail("%v", err)
		}
	case sections["raw"] != nil:
		for _, f := range fields(sections["raw"].String()) {
			v, err := strconv.ParseUint(f, 0, 64)
			if err != nil {
				return fail("raw slot %q: %v", f, err)
			}
			c.Raw = binary.LittleEndian.AppendUint64(c.Raw, v)
		}
	default:
		return fail("no -- asm or -- raw section")
	}
	if s := sections["mem"]; s != nil {
		for _, f := range fields(s.String()) {
			b, err := hex.DecodeString(f)
			if err != nil || len(b) != 1 {
				return fail("mem byte %q", f)
			}
			c.Mem = append(c.Mem, b[0])
		}
	}
	if s := sections["error"]; s != nil {
		c.Error = strings.TrimSpace(s.String())
	}
	if s := sections["result"]; s != nil {
		r := strings.TrimSpace(stripComments(s.String()))
		if c.Result, err = strconv.ParseUint(r, 0, 64); err != nil {
			return fail("result %q: %v", r, err)
		}
	} else if c.Error == "" {
		return fail("neither -- result nor -- error")
	}
	return c, nil
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func fields(s string) []string { return strings.Fields(stripComments(s)) }

// Instructions decodes the case's program.
func (c Case) Instructions() (asm.Instructions, error) { return bytecode.Decode(c.Raw) }

// EchoHelper is the helper number the conformance protocol requires: it returns
// its first argument.
const EchoHelper = 5

// Helpers are the helpers ISA tests may call.
func Helpers() map[int32]interp.Helper {
	return map[int32]interp.Helper{
		EchoHelper: func(_ interp.Memory, r1, _, _, _, _ uint64) (uint64, error) { return r1, nil },
	}
}

// Check compares a run's outcome with the case's expectation.
func (c Case) Check(r0 uint64, err error) error {
	switch {
	case c.Error != "" && err == nil:
		return fmt.Errorf("%s: returned %#x, want error %q", c.Name, r0, c.Error)
	case c.Error != "" && !strings.Contains(err.Error(), c.Error):
		return fmt.Errorf("%s: error %q, want %q", c.Name, err, c.Error)
	case c.Error == "" && err != nil:
		return fmt.Errorf("%s: %v", c.Name, err)
	case c.Error == "" && r0 != c.Result:
		return fmt.Errorf("%s: r0 = %#x, want %#x", c.Name, r0, c.Result)
	}
	return nil
}
