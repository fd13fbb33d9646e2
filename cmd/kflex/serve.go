package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/kernel"
	"github.com/kflex-go/kflex/serve"
)

func init() {
	commands["serve"] = command{summary: "run the extension runtime: a heap, extensions, and a socket for processes", run: runServe}
}

func runServe(args []string, out io.Writer) error {
	fs := newFlags("serve", "--socket PATH [--socket-mode MODE] [--heap PATH | --arena] [--size SIZE] [--threads N] [--budget D] [--budget-for NAME@D]... [--every NAME@INTERVAL]... [--udp NAME@ADDR]... [--metrics ADDR] [--log-level LEVEL] [--log-format text|json] PROG...", `Run the extension runtime. It opens the heap file at --heap (creating it with
--size if it does not exist; without --heap, an anonymous heap; with --arena, a
heap in a new BPF arena of --size, at most 4G, which kernel programs can share:
root and Linux 6.9+), compiles each
PROG (an ELF object: every program in it, under its function name, or with
OBJ:NAME the one named; its globals live in the heap, where processes find
them by name (userspace Client.Global). Or kflex assembler text or raw
bytecode, named by the file name without extension) and serves processes that attach at --socket
(userspace.Dial): they receive the heap and invoke the extensions by name.
The runtime's own events run extensions too: --every runs NAME every INTERVAL
(a Go duration, e.g. 100ms) with argument 0; --udp runs NAME on every datagram
to ADDR (host:port), the datagram in the heap at the argument (r3) and its
length in the context, and replies with a zero byte and r0 (8 bytes, little-
endian) or a one byte and the error. An invocation that runs longer than its
time budget (--budget, --budget-for) is cancelled at its next cancellation
point; so is one whose process disconnects, or that 'kflex cancel' names. What
a cancelled extension holds is released: its locks pass to their next
acquirer with the owner-died result, its unpublished allocations are freed.
Stops on SIGINT or SIGTERM: running invocations are cancelled, and the command
exits within a cancellation's time (milliseconds).
The runtime logs to stderr (--log-level, --log-format): its start, processes
attaching, detaching and dying, cancellations and failures. --metrics serves
Prometheus metrics (invocations, errors and run times per program,
cancellations by cause, lock waits, owner-died recoveries, the heap's
allocator, executors, attached processes); 'kflex status' lists the programs
and attached processes of a running runtime.`, out)
	socket := fs.String("socket", "", "unix socket to listen on (required)")
	heapPath := fs.String("heap", "", "heap file (default: an anonymous memfd heap)")
	inArena := fs.Bool("arena", false, "put the heap in a new BPF arena")
	size := byteSize(256 << 20)
	fs.Var(&size, "size", "`SIZE` of a new heap (a power of two)")
	threads := fs.Int("threads", 2, "executor threads (1 to 1024)")
	budget := fs.Duration("budget", serve.DefaultBudget, "time one invocation may run before it is cancelled (0: no limit)")
	budgets := map[string]time.Duration{}
	fs.Func("budget-for", "time budget of extension NAME: NAME@DURATION (repeatable; overrides --budget)", func(v string) error {
		name, d, ok := strings.Cut(v, "@")
		dur, err := time.ParseDuration(d)
		if !ok || name == "" || err != nil || dur < 0 {
			return fmt.Errorf("%q: want NAME@DURATION with a duration such as 2s (0: no limit)", v)
		}
		if dur == 0 {
			dur = -1
		}
		budgets[name] = dur
		return nil
	})
	var timers []timerFlag
	var udps []udpFlag
	fs.Func("every", "run extension NAME every INTERVAL: NAME@INTERVAL (repeatable)", func(v string) error {
		name, d, ok := strings.Cut(v, "@")
		interval, err := time.ParseDuration(d)
		if !ok || name == "" || err != nil || interval <= 0 {
			return fmt.Errorf("%q: want NAME@INTERVAL with a positive duration such as 100ms", v)
		}
		timers = append(timers, timerFlag{name, interval})
		return nil
	})
	fs.Func("udp", "run extension NAME on datagrams to ADDR: NAME@HOST:PORT (repeatable)", func(v string) error {
		name, addr, ok := strings.Cut(v, "@")
		ua, err := net.ResolveUDPAddr("udp", addr)
		if !ok || name == "" || err != nil {
			return fmt.Errorf("%q: want NAME@HOST:PORT", v)
		}
		udps = append(udps, udpFlag{name, ua})
		return nil
	})
	ops := addOpsFlags(fs)
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if *socket == "" || fs.NArg() == 0 {
		return fmt.Errorf("serve: %w: need --socket and at least one program (see 'kflex serve -h')", errUsage)
	}
	if *inArena && *heapPath != "" {
		return fmt.Errorf("serve: %w: --heap and --arena exclude each other", errUsage)
	}
	if err := badFlags("serve", inRange("threads", *threads, 1, 1024), atLeast("budget", *budget, 0), heapSize("size", size)); err != nil {
		return err
	}
	progs, objs, err := loadPrograms(fs.Args())
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log := ops.logger(os.Stderr)
	// The socket first: a runtime already serving there ends the command
	// before it opens (or creates) the heap, places globals in it or runs
	// an event. Connections wait in the backlog until Serve.
	ln, err := serve.Listen(*socket, serve.ListenOptions{Mode: ops.socketMode, Logger: log}) // replacing a stale socket, refusing a live one
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer os.Remove(*socket)
	defer ln.Close() // Serve closes it too; this is for the returns before it
	opts := serve.Options{JIT: *threads, Trace: out, Budget: *budget, Budgets: budgets, Logger: log, Objects: objs}
	if *budget == 0 {
		opts.Budget = -1 // no limit
	}
	var h *heap.Heap
	if *inArena {
		a, err := kernel.NewArena(uint64(size))
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer a.Close()
		if h, err = a.NewHeap(nil); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		opts.ArenaFD = a.FD()
	} else if h, err = openOrCreateHeap(*heapPath, uint64(size)); err != nil {
		return err
	}
	defer h.Close()
	reg, stopMetrics, err := ops.startMetrics(log)
	if err != nil {
		return err
	}
	defer stopMetrics() // before the heap closes: a scrape reads it
	if reg != nil {
		opts.Metrics = reg
	}
	rt, err := serve.NewWith(h, progs, opts)
	if err != nil {
		return err
	}
	// SIGINT and SIGTERM stop the runtime from here on: once the events
	// below run, a client may act on them and then stop the command.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	udpErrs, started := make(chan error, len(udps)), 0
	defer func() {
		rt.Close() // also ends ServeUDP
		for range started {
			if err := <-udpErrs; err != nil {
				fmt.Fprintf(out, "kflex runtime: %v\n", err)
			}
		}
	}()
	// The events, before the socket: a bad one ends the command at once.
	for _, tf := range timers {
		if _, err := rt.Every(tf.name, tf.interval, 0); err != nil {
			return err
		}
	}
	for _, uf := range udps {
		conn, err := net.ListenUDP("udp", uf.addr)
		if err != nil {
			return fmt.Errorf("serve: udp %s: %w", uf.addr, err)
		}
		fmt.Fprintf(out, "kflex runtime: %s on datagrams to %s\n", uf.name, conn.LocalAddr())
		started++
		go func() {
			err := rt.ServeUDP(conn, uf.name)
			conn.Close()
			udpErrs <- err
		}()
	}
	go func() {
		<-sig
		ln.Close()
	}()
	names := make([]string, 0, len(progs))
	for n := range progs {
		names = append(names, n)
	}
	for _, obj := range objs {
		names = append(names, obj.Names()...)
	}
	fmt.Fprintf(out, "kflex runtime: heap %s (%d MiB), %d executors (%v), extensions %v, listening on %s\n",
		h.Name(), h.Size()>>20, *threads, rt.SliceStatus(), names, *socket)
	return rt.Serve(ln)
}

type timerFlag struct {
	name     string
	interval time.Duration
}

type udpFlag struct {
	name string
	addr *net.UDPAddr
}

func openOrCreateHeap(path string, size uint64) (*heap.Heap, error) {
	opts := &heap.Options{Params: heap.Params{Size: size}}
	if path == "" {
		return heap.CreateMemfd("kflex-serve", opts)
	}
	if _, err := os.Stat(path); err == nil {
		return heap.Open(path, nil)
	}
	return heap.Create(path, opts)
}
