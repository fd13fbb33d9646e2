package main

import (
	"fmt"
	"io"

	"github.com/kflex-go/kflex/jit"
)

func init() {
	commands["jit"] = command{summary: "show the amd64 code the JIT generates for a program", run: runJIT}
}

func runJIT(args []string, out io.Writer) error {
	fs := newFlags("jit", "--disasm [--guard all|stores|none] PROG", `Compile PROG (an ELF object, kflex assembler text, or raw bytecode) and
print each eBPF instruction, in the kernel's verifier-log text that kflex
verify's rejection logs use ("3: (85) call time#1262878738"), with the amd64
code generated for it, then the out-of-line exits.`, out)
	disasm := fs.Bool("disasm", false, "print the listing (the only mode for now)")
	guard := fs.String("guard", "all", "memory guards: all, stores (performance mode), none")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	_ = disasm
	insns, err := loadProgram(fs.Arg(0))
	if err != nil {
		return err
	}
	g, ok := map[string]jit.Guard{"all": jit.GuardAll, "stores": jit.GuardStores, "none": jit.GuardNone}[*guard]
	if !ok {
		return fmt.Errorf("jit: %w: --guard %q: want all, stores or none", errUsage, *guard)
	}
	return jit.Listing(out, insns, g)
}
