package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf/asm"

	"github.com/kflex-go/kflex/abi"
	"github.com/kflex-go/kflex/bytecode"
	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/internal/benchprog"
	"github.com/kflex-go/kflex/jit"
	"github.com/kflex-go/kflex/serve"
)

// Loops that end only when cancelled: a tight one with no helper call, and
// one that calls a helper every round.
var cancelLoops = map[string]string{
	"loop":        "mov %r0, 1\nloop:\nadd %r0, 1\njne %r0, 0, loop\nexit",
	"helper_loop": fmt.Sprintf("mov %%r6, 1\nloop:\ncall %d\nadd %%r6, 1\njne %%r6, 0, loop\nmov %%r0, 0\nexit", abi.HelperTime),
}

// MeasureCancel times cancellation (`kflex bench cancel`): for each engine
// (jit, interp) and loop shape (loop: no helper call; helper_loop: a helper
// call every round), the time from Runtime.Cancel to the invocation's
// return, over stops cancellations at random moments (ENGINE[_helper].p50_us,
// .p99_us, .max_us); and the cost of the JIT's cancellation checks on the
// benchmark corpus's loop program, run with and without them side by side
// for per each (check_cost_pct).
func MeasureCancel(stops int, per time.Duration) (map[string]float64, error) {
	figures := map[string]float64{}
	progs := map[string]asm.Instructions{}
	for name, src := range cancelLoops {
		insns, err := bytecode.Assemble(src)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		progs[name] = insns
	}
	dir, err := os.MkdirTemp("", "kflex-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	h, err := heap.Create(filepath.Join(dir, "heap"), &heap.Options{Params: heap.Params{Size: 8 << 20}})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	for engine, o := range map[string]serve.Options{"jit": {JIT: 1}, "interp": {Interpreted: 1}} {
		o.Budget, o.Trace = -1, io.Discard
		rt, err := serve.NewWith(h, progs, o)
		if err != nil {
			return nil, err
		}
		for name := range progs {
			key := engine
			if name == "helper_loop" {
				key += "_helper"
			}
			lat, err := stopLatencies(rt, name, stops)
			if err != nil {
				rt.Close()
				return nil, fmt.Errorf("%s %s: %w", engine, name, err)
			}
			slices.Sort(lat)
			figures[key+".p50_us"] = us(lat[len(lat)/2])
			figures[key+".p99_us"] = us(lat[len(lat)*99/100])
			figures[key+".max_us"] = us(lat[len(lat)-1])
		}
		if err := rt.Close(); err != nil {
			return nil, err
		}
	}
	cost, err := checkCost(per)
	if err != nil {
		return nil, err
	}
	figures["check_cost_pct"] = cost
	return figures, nil
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// stopLatencies cancels n invocations of name, each after a random 0.1-1 ms
// of running, and returns how long each took to return after the request.
func stopLatencies(rt *serve.Runtime, name string, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	type result struct {
		at  time.Time // when Invoke returned, in the invoking goroutine
		err error
	}
	done := make(chan result, 1)
	for range n {
		go func() {
			_, err := rt.Invoke(context.Background(), name, 0)
			done <- result{time.Now(), err}
		}()
		for len(rt.Running()) == 0 {
			time.Sleep(20 * time.Microsecond)
		}
		time.Sleep(time.Duration(100+rand.IntN(900)) * time.Microsecond)
		start := time.Now()
		if rt.Cancel(name) != 1 {
			return nil, errors.New("the invocation was not running")
		}
		r := <-done
		lat = append(lat, r.at.Sub(start))
		if !errors.Is(r.err, abi.ErrCancelled) {
			return nil, fmt.Errorf("want a cancellation, got %v", r.err)
		}
	}
	return lat, nil
}

// checkCost runs benchprog's loop program compiled with and without the
// terminate word's test at its back-edges, alternately, and returns how much
// slower the checked code is, in percent.
func checkCost(per time.Duration) (float64, error) {
	m, err := jit.NewMachine(1 << 20)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	const dataOff = 256 << 10
	sb := m.Sandbox()
	var loop *benchprog.Program
	for i := range benchprog.Corpus {
		if benchprog.Corpus[i].Name == "loop" {
			loop = &benchprog.Corpus[i]
		}
	}
	if loop == nil {
		return 0, errors.New("benchprog has no loop program")
	}
	insns, _, err := loop.Build(sb[dataOff:dataOff+benchprog.Size], m.Base()+dataOff)
	if err != nil {
		return 0, err
	}
	var runs [2]func() error
	for i, o := range []jit.Options{{NoCancelCheck: true}, {}} {
		p, err := jit.CompileWith(insns, o)
		if err != nil {
			return 0, err
		}
		defer p.Close()
		runs[i] = func() error { _, err := m.Run(p, nil); return err }
	}
	var ns [2]float64
	for range 10 { // alternate, so that a noisy moment hits both
		for i, run := range runs {
			t, err := timeRuns(per/10, run)
			if err != nil {
				return 0, err
			}
			ns[i] += t
		}
	}
	return 100 * (ns[1]/ns[0] - 1), nil
}
