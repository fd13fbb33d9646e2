// Command kflex-bpf-conformance runs one eBPF program for the bpf_conformance
// test runner (its plugin protocol):
//
//	kflex-bpf-conformance [MEMHEX] [--interp|--jit] [--elf]
//
// The program arrives on stdin as one line of hex bytes (8 per instruction slot),
// or, with --elf, as the hex bytes of an ELF object whose first program is run.
// MEMHEX, when present, is the program's input memory as hex bytes: r1 points to
// a copy of it and r2 holds its length (both 0 without it). r10 is the top of a
// 512-byte stack frame. On success it prints r0 as 0x-prefixed hex and exits 0;
// on any error it prints the error to stderr and exits 1 (2 for a bad command
// line). Helper 5 returns its first argument. --jit runs the program as amd64
// machine code, where every memory access is confined to the sandbox: an access
// the interpreter reports as out of bounds lands in the sandbox instead.
//
// Layer 9 (commands: cmd/kflex, cmd/kflex-bpf-conformance): the top; nothing
// imports it.
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/internal/isatest"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/jit/interp"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

var errUsage = errors.New("usage: kflex-bpf-conformance [MEMHEX] [--interp|--jit] [--elf]")

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	r0, err := execute(args, stdin)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stdout, "%#x\n", r0)
	return 0
}

func execute(args []string, stdin io.Reader) (uint64, error) {
	var mem []byte
	engine, elf := "interp", false
	for i, a := range args {
		switch {
		case a == "--interp":
			engine = "interp"
		case a == "--jit":
			engine = "jit"
		case a == "--elf":
			elf = true
		case a == "-h" || a == "--help":
			return 0, errUsage
		case strings.HasPrefix(a, "-"):
			return 0, fmt.Errorf("%w: unknown option %q", errUsage, a)
		case i == 0:
			var err error
			if mem, err = decodeHex(a); err != nil {
				return 0, fmt.Errorf("%w: memory: %v", errUsage, err)
			}
		default:
			return 0, fmt.Errorf("%w: unexpected argument %q", errUsage, a)
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read program: %w", err)
	}
	raw, err := decodeHex(line)
	if err != nil {
		return 0, fmt.Errorf("program: %w", err)
	}
	if elf {
		if raw, err = firstProgram(raw); err != nil {
			return 0, err
		}
	}
	if engine == "jit" {
		return runJIT(raw, mem)
	}
	p, err := interp.LoadBytes(raw)
	if err != nil {
		return 0, err
	}
	m := interp.NewMachine()
	m.Helpers = isatest.Helpers()
	return m.Run(p, mem)
}

// runJIT compiles and runs the program natively, in a 1 MiB sandbox.
func runJIT(raw, mem []byte) (uint64, error) {
	insns, err := bytecode.Decode(raw)
	if err != nil {
		return 0, err
	}
	p, err := jit.Compile(insns)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	m, err := jit.NewMachine(1 << 20)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	m.Helpers = isatest.Helpers()
	return m.Run(p, mem)
}

// decodeHex reads bytes written as hex pairs separated by white space (or not
// separated at all).
func decodeHex(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return nil, fmt.Errorf("bad hex: %v", err)
	}
	return b, nil
}

// firstProgram extracts the bytecode of the first program in an ELF object.
func firstProgram(obj []byte) ([]byte, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(obj))
	if err != nil {
		return nil, fmt.Errorf("read ELF: %w", err)
	}
	for _, p := range spec.Programs {
		return bytecode.Encode(p.Instructions)
	}
	return nil, errors.New("ELF object has no program")
}
