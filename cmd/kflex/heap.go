package main

import (
	"errors"
	"flag"
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
	commands["heap"] = command{summary: "create or inspect a shared heap file", run: runHeap, subcommands: true}
}

func runHeap(args []string, out io.Writer) error {
	const doc = `Subcommands:
  create [--size SIZE] PATH   create a heap file (SIZE a power of two: 1M ... 64G; default 256M)
  info [--json] PATH          print a heap's header, owner table, allocator state and locks
  check [--json] PATH         verify the owner table, the allocator and the queue nodes; exit 1 naming the first violation`
	if len(args) == 0 {
		return fmt.Errorf("heap: %w: missing subcommand (create, info or check)", errUsage)
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprintf(out, "usage: kflex heap create|info|check ...\n\n%s\n", doc)
		return flag.ErrHelp
	}
	switch args[0] {
	case "create":
		return heapCreate(args[1:], out)
	case "info":
		return heapInfo(args[1:], out)
	case "check":
		return heapCheck(args[1:], out)
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
	size := byteSize(256 << 20)
	fs.Var(&size, "size", "heap `SIZE`: a power of two from 1M to 64G")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if err := badFlags("heap create", heapSize("size", size)); err != nil {
		return err
	}
	h, err := heap.Create(fs.Arg(0), &heap.Options{Params: heap.Params{Size: uint64(size)}})
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
	Path       string             `json:"path"`
	Version    uint32             `json:"version"`
	Size       uint64             `json:"size"`
	CanonBase  string             `json:"canonical_base"`
	Created    time.Time          `json:"created"`
	CreatorPID uint32             `json:"creator_pid"`
	Params     heap.Params        `json:"params"`
	Layout     heap.Layout        `json:"layout"`
	Owners     []owner            `json:"owners"`
	Alloc      heap.Stats         `json:"alloc"`
	Locks      []heap.LockReport  `json:"alloc_locks"`
	Caches     []heap.CacheReport `json:"alloc_caches"`
	Owned      []heap.OwnedReport `json:"owned_objects"`
	Nodes      []queuedNode       `json:"queued_nodes"`
	LockWords  []queuedLock       `json:"queued_locks"`
	Busy       []lockWord         `json:"lock_words"`       // listed or queued on, and not free
	WordsRead  int                `json:"lock_words_read"`  // lock words the directories and queues name
	WordsOther int                `json:"lock_words_other"` // of those, words that read as no lock word now
	FullDirs   []uint32           `json:"full_lock_directories"`
	Problems   []string           `json:"problems,omitempty"` // what does not parse
}

// owner is an occupied slot of the owner table (mcs.OwnerState).
type owner struct {
	Slot uint32 `json:"slot"`
	PID  uint32 `json:"pid"`
	TID  uint32 `json:"tid"`  // of the designated thread
	Dead bool   `json:"dead"` // the kernel reported the process's death
	Gen  uint32 `json:"gen"`
}

func owners(h *heap.Heap) []owner {
	var out []owner
	for _, o := range mcs.Owners(h) {
		out = append(out, owner(o))
	}
	return out
}

// openInspect parses the [--json] PATH arguments of heap info and check and
// maps the heap at PATH for reading only: nothing in its body is trusted, no
// lock is taken and nothing is written.
func openInspect(name, doc string, args []string, out io.Writer) (h *heap.Heap, path string, asJSON bool, err error) {
	fs := newFlags(name, "[--json] PATH", doc, out)
	js := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args, 1); err != nil {
		return nil, "", false, err
	}
	h, err = heap.Open(fs.Arg(0), &heap.Options{Inspect: true})
	return h, fs.Arg(0), *js, err
}

func heapInfo(args []string, out io.Writer) error {
	h, path, asJSON, err := openInspect("heap info", "Describe the heap at PATH: header, attached processes, allocator and its locks, queued lock nodes. Takes no lock.", args, out)
	if err != nil {
		return err
	}
	defer h.Close()
	hdr := h.Header()
	rep, rerr := h.Inspect()
	in := info{Path: path, Version: hdr.Version, Size: hdr.Size,
		CanonBase: fmt.Sprintf("%#x", hdr.CanonBase), Created: time.Unix(0, hdr.Created),
		CreatorPID: hdr.CreatorPID, Params: hdr.Params, Layout: hdr.Layout,
		Owners: owners(h), Alloc: rep.Stats, Locks: rep.Locks, Caches: rep.Caches, Owned: rep.Owned}
	in.Nodes, in.LockWords = queues(h)
	in.Busy, in.WordsRead, in.WordsOther, in.FullDirs = lockWords(h, in.LockWords)
	for _, e := range append(unjoin(rerr), mcs.CheckLocks(h)...) {
		in.Problems = append(in.Problems, e.Error())
	}
	if asJSON {
		in.Owners, in.Locks, in.Caches = nonNil(in.Owners), nonNil(in.Locks), nonNil(in.Caches)
		in.Nodes, in.LockWords = nonNil(in.Nodes), nonNil(in.LockWords)
		in.Busy, in.FullDirs = nonNil(in.Busy), nonNil(in.FullDirs)
		if err := writeJSON(out, in); err != nil {
			return err
		}
	} else {
		printInfo(out, &in, hdr)
	}
	if len(in.Problems) > 0 {
		return fmt.Errorf("heap %s: words that do not parse: %d; first: %s", in.Path, len(in.Problems), in.Problems[0])
	}
	return nil
}

// unjoin lists the errors errors.Join joined into err.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func printInfo(out io.Writer, in *info, hdr heap.Header) {
	fmt.Fprintf(out, "heap %s\n  layout version %d, size %s (2^%d), canonical base %#x\n",
		in.Path, in.Version, human(in.Size), bits.TrailingZeros64(in.Size), hdr.CanonBase)
	fmt.Fprintf(out, "  created %s by pid %d\n", in.Created.Format(time.RFC3339), in.CreatorPID)
	fmt.Fprintf(out, "  owner slots %d, queue nodes per process %d, allocator caches %d\n",
		hdr.MaxProcs, hdr.NodesPerProc, hdr.Params.Caches)
	dead := 0
	for _, o := range in.Owners {
		if o.Dead {
			dead++
		}
	}
	fmt.Fprintf(out, "attached processes: %d (%d dead)\n", len(in.Owners), dead)
	for _, o := range in.Owners {
		state := "alive"
		if o.Dead {
			state = "DEAD (reported by the kernel)"
		}
		fmt.Fprintf(out, "  slot %d: pid %d, tid %d, gen %d, %s\n", o.Slot, o.PID, o.TID, o.Gen, state)
	}
	held := 0
	for _, l := range in.Locks {
		if l.Held {
			held++
		}
	}
	fmt.Fprintf(out, "allocator locks: %d, %d held\n", len(in.Locks), held)
	for _, l := range in.Locks {
		if !l.Held && l.Takeovers == 0 {
			continue
		}
		state := "free"
		if l.Held {
			state = fmt.Sprintf("held by %s (%s)", l.Holder, l.State)
			if l.Redo > 0 {
				state += fmt.Sprintf(", %d redo entries committed", l.Redo)
			}
		}
		fmt.Fprintf(out, "  %s: %s; taken over from dead holders %d times\n", l.Name, state, l.Takeovers)
	}
	fmt.Fprintf(out, "allocator cache slots: %d claimed, %d of dead processes\n", len(in.Caches), in.Alloc.DeadCaches)
	for _, c := range in.Caches {
		fmt.Fprintf(out, "  cache %d: %s (%s), %d objects\n", c.Index, c.Owner, c.State, c.Objects)
	}
	fmt.Fprintf(out, "owned objects (freed at detach, or by the next reap after a death): %d slots\n", len(in.Owned))
	for _, o := range in.Owned {
		state := "alive"
		if o.Dead {
			state = "dead: freed at the next reap"
		}
		fmt.Fprintf(out, "  slot %d (%s): %d objects\n", o.Slot, state, o.Objects)
	}
	s := in.Alloc
	fmt.Fprintf(out, "allocator: %d of %d pages free; %d live objects, %s; %d objects stranded in dead caches\n",
		s.FreePages, s.Pages, s.LiveObjects, human(s.LiveBytes), s.Stranded)
	for _, c := range s.Classes {
		if c.Slabs > 0 {
			fmt.Fprintf(out, "  %5d B: %d slabs, %d live, %d free, %d cached\n",
				c.Size, c.Slabs, c.Live, c.CentralFree, c.Cached)
		}
	}
	if s.LargeRuns > 0 {
		fmt.Fprintf(out, "  large: %d runs, %d pages\n", s.LargeRuns, s.LargePages)
	}
	fmt.Fprintf(out, "lock words: %d listed by processes or queued on, %d not free\n", in.WordsRead, len(in.Busy))
	if in.WordsOther > 0 {
		fmt.Fprintf(out, "  %d listed words read as no lock word now (freed with their object since, presumably)\n", in.WordsOther)
	}
	for _, l := range in.Busy {
		holder := ""
		if l.Holder != "" {
			holder = " (holder " + l.Holder + ")"
		}
		fmt.Fprintf(out, "  lock %#x: %s%s\n", l.Offset, l.Word, holder)
	}
	for _, s := range in.FullDirs {
		fmt.Fprintf(out, "  slot %d's lock directory is full (%d words): lock words it uses beyond those are not listed\n", s, heap.LockDirPerProc)
	}
	fmt.Fprintf(out, "queued lock nodes: %d\n", len(in.Nodes))
	for _, n := range in.Nodes {
		fmt.Fprintf(out, "  node %d (slot %d): %s on lock %#x, next %s\n", n.Index, n.Slot, n.State, n.Lock, n.nextString())
	}
	for _, p := range in.Problems {
		fmt.Fprintf(out, "does not parse: %s\n", p)
	}
}

// checkResult is heap check's JSON form.
type checkResult struct {
	Path    string             `json:"path"`
	OK      bool               `json:"ok"`
	Summary *heap.CheckSummary `json:"summary,omitempty"`
	Error   string             `json:"error,omitempty"`
	Offset  *uint64            `json:"offset,omitempty"` // of the first violation
	Field   string             `json:"field,omitempty"`
}

func heapCheck(args []string, out io.Writer) error {
	h, path, asJSON, err := openInspect("heap check", "Verify the owner table, the allocator's invariants and the lock queues' node table in the heap at PATH (meant for a heap no live process is changing). Takes no lock; exits 1 naming the first violation.", args, out)
	if err != nil {
		return err
	}
	defer h.Close()
	sum, cerr := h.Check()
	if nodes := mcs.CheckLocks(h); cerr == nil && len(nodes) > 0 {
		cerr = nodes[0]
	}
	res := checkResult{Path: path, OK: cerr == nil}
	if cerr == nil {
		res.Summary = &sum
	} else {
		res.Error = cerr.Error()
		var fe *heap.FieldError
		if errors.As(cerr, &fe) {
			res.Offset, res.Field = &fe.Offset, fe.Field
		}
	}
	switch {
	case asJSON:
		if err := writeJSON(out, res); err != nil {
			return err
		}
	case cerr == nil:
		fmt.Fprintf(out, "%s: %s\n", res.Path, sum)
	}
	if cerr != nil {
		return fmt.Errorf("heap check %s: %w", res.Path, cerr)
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
