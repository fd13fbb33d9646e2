package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
)

func init() {
	commands["heap"] = command{summary: "create or inspect a shared heap file", run: runHeap}
}

func runHeap(args []string, out io.Writer) error {
	const doc = `Subcommands:
  create [--size SIZE] PATH   create a heap file (SIZE a power of two: 1M ... 64G; default 256M)
  info [--json] PATH          print a heap's header, owner table and allocator state`
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(out, "usage: kflex heap create|info ...\n\n%s\n", doc)
		if len(args) == 0 {
			return fmt.Errorf("heap: %w: missing subcommand", errUsage)
		}
		return nil
	}
	switch args[0] {
	case "create":
		return heapCreate(args[1:], out)
	case "info":
		return heapInfo(args[1:], out)
	}
	return fmt.Errorf("heap: %w: unknown subcommand %q", errUsage, args[0])
}

// parseSize reads a byte count with an optional K, M or G suffix (powers of 1024).
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > (1<<63)/mult {
		return 0, fmt.Errorf("bad size %q: want a number with an optional K, M or G suffix", s)
	}
	return n * mult, nil
}

func heapCreate(args []string, out io.Writer) error {
	fs := newFlags("heap create", "[--size SIZE] PATH", "Create a sparse heap file at PATH (which must not exist).", out)
	sizeFlag := fs.String("size", "256M", "heap size: a power of two from 1M to 64G")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return fmt.Errorf("heap create: %w: %v", errUsage, err)
	}
	h, err := heap.Create(fs.Arg(0), &heap.Options{Params: heap.Params{Size: size}})
	if err != nil {
		return err
	}
	defer h.Close()
	hdr := h.Header()
	fmt.Fprintf(out, "created %s: %s, %d owner slots, %d queue nodes per process, %d allocator pages\n",
		fs.Arg(0), human(hdr.Size), hdr.MaxProcs, hdr.NodesPerProc, h.Stats().Pages)
	return nil
}

// info is what heap info prints, and its JSON form.
type info struct {
	Path       string           `json:"path"`
	Version    uint32           `json:"version"`
	Size       uint64           `json:"size"`
	CanonBase  string           `json:"canonical_base"`
	Created    time.Time        `json:"created"`
	CreatorPID uint32           `json:"creator_pid"`
	Params     heap.Params      `json:"params"`
	Layout     heap.Layout      `json:"layout"`
	Owners     []mcs.OwnerState `json:"owners"`
	Alloc      heap.Stats       `json:"alloc"`
}

func heapInfo(args []string, out io.Writer) error {
	fs := newFlags("heap info", "[--json] PATH", "Describe the heap at PATH: header, attached processes, allocator.", out)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	h, err := heap.Open(fs.Arg(0), nil)
	if err != nil {
		return err
	}
	defer h.Close()
	hdr := h.Header()
	in := info{Path: fs.Arg(0), Version: hdr.Version, Size: hdr.Size,
		CanonBase: fmt.Sprintf("%#x", hdr.CanonBase), Created: time.Unix(0, hdr.Created),
		CreatorPID: hdr.CreatorPID, Params: hdr.Params, Layout: hdr.Layout,
		Owners: mcs.Owners(h), Alloc: h.Stats()}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(in)
	}
	fmt.Fprintf(out, "heap %s\n  layout version %d, size %s (2^%d), canonical base %#x\n",
		in.Path, in.Version, human(in.Size), bits.TrailingZeros64(in.Size), hdr.CanonBase)
	fmt.Fprintf(out, "  created %s by pid %d\n", in.Created.Format(time.RFC3339), in.CreatorPID)
	fmt.Fprintf(out, "  owner slots %d, queue nodes per process %d, allocator caches %d\n",
		hdr.MaxProcs, hdr.NodesPerProc, hdr.Params.Caches)
	fmt.Fprintf(out, "attached processes: %d\n", len(in.Owners))
	for _, o := range in.Owners {
		state := "alive"
		if o.Dead {
			state = "DEAD (reported by the kernel)"
		}
		fmt.Fprintf(out, "  slot %d: pid %d, tid %d, %s\n", o.Slot, o.PID, o.TID, state)
	}
	s := in.Alloc
	fmt.Fprintf(out, "allocator: %d of %d pages free; %d live objects, %s\n",
		s.FreePages, s.Pages, s.LiveObjects, human(s.LiveBytes))
	for _, c := range s.Classes {
		if c.Slabs > 0 {
			fmt.Fprintf(out, "  %5d B: %d slabs, %d live, %d free, %d cached\n",
				c.Size, c.Slabs, c.Live, c.CentralFree, c.Cached)
		}
	}
	if s.LargeRuns > 0 {
		fmt.Fprintf(out, "  large: %d runs, %d pages\n", s.LargeRuns, s.LargePages)
	}
	return nil
}

func human(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
