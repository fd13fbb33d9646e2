package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// benchRow is the figures of one row of kflex bench's table: a program, a
// waiter, an engine: the figures named ROW.FIGURE.
type benchRow struct {
	name    string
	figures map[string]float64
}

// benchRows splits figures into rows (the figures named ROW.FIGURE, by row
// name) and the figures that belong to no row (named without a dot).
func benchRows(figures map[string]float64) (rows []benchRow, scalars map[string]float64) {
	byName, scalars := map[string]map[string]float64{}, map[string]float64{}
	for k, v := range figures {
		row, fig, ok := strings.Cut(k, ".")
		if !ok {
			scalars[k] = v
			continue
		}
		if byName[row] == nil {
			byName[row] = map[string]float64{}
		}
		byName[row][fig] = v
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		rows = append(rows, benchRow{name, byName[name]})
	}
	return rows, scalars
}

// benchJSON is kflex bench --json's object: the suite, the rows (each an
// object with its name and figures) and the figures of no row.
func benchJSON(suite string, rows []benchRow, scalars map[string]float64) map[string]any {
	obj := map[string]any{"suite": suite}
	for k, v := range scalars {
		obj[k] = v
	}
	objRows := []map[string]any{}
	for _, r := range rows {
		o := map[string]any{"name": r.name}
		for k, v := range r.figures {
			o[k] = v
		}
		objRows = append(objRows, o)
	}
	obj["rows"] = objRows
	return obj
}

// writeBenchTable prints the rows as a table, a column per figure any row
// has ("-" where a row has none), then the figures of no row, one a line:
// names left-aligned, figures right-aligned.
func writeBenchTable(out io.Writer, rows []benchRow, scalars map[string]float64) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	width := 0
	for _, r := range rows {
		width = max(width, len(r.name))
	}
	for k := range scalars {
		width = max(width, len(k))
	}
	name := func(s string) string { return fmt.Sprintf("%-*s", width, s) }
	if len(rows) > 0 {
		cols := map[string]bool{}
		for _, r := range rows {
			for k := range r.figures {
				cols[k] = true
			}
		}
		names := slices.Sorted(maps.Keys(cols))
		fmt.Fprintf(tw, "%s\t%s\t\n", name(""), strings.Join(names, "\t"))
		for _, r := range rows {
			cells := make([]string, len(names))
			for i, c := range names {
				cells[i] = "-"
				if v, ok := r.figures[c]; ok {
					cells[i] = figure(v)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t\n", name(r.name), strings.Join(cells, "\t"))
		}
		if len(scalars) > 0 {
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(out)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(scalars)) {
		fmt.Fprintf(tw, "%s\t%s\t\n", name(k), figure(scalars[k]))
	}
	return tw.Flush()
}

// figure formats a measured value: whole numbers as such, others with two
// decimals.
func figure(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// progressTick is how often the progress line is redrawn.
const progressTick = 200 * time.Millisecond

// progress is a line on a terminal saying what a long command is doing and
// for how long it has been at it, redrawn every tick and cleared at the end.
// Without a terminal (a nil writer) it shows nothing, and notes go to
// os.Stderr as plain lines.
type progress struct {
	w     io.Writer
	title string
	mu    sync.Mutex
	what  string
	since time.Time
	stop  chan struct{}
	done  chan struct{}
}

// startProgress shows title and the phase on w every tick (nil w: never).
func startProgress(w io.Writer, title string, tick time.Duration) *progress {
	p := &progress{w: w, title: title, since: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if w == nil {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.draw()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// draw redraws the line; the caller holds p.mu.
func (p *progress) draw() {
	fmt.Fprintf(p.w, "\r%s: %s, %.1fs\033[K", p.title, p.what, time.Since(p.since).Seconds())
}

// phase says what is measured from now on.
func (p *progress) phase(what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.what, p.since = what, time.Now()
	if p.w != nil {
		p.draw()
	}
}

// note prints a line of its own (on stderr), above the progress line.
func (p *progress) note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		return
	}
	fmt.Fprintf(p.w, "\r\033[K"+format+"\n", args...)
	p.draw()
}

// end stops and clears the line.
func (p *progress) end() {
	if p.w == nil {
		return
	}
	close(p.stop)
	<-p.done
	fmt.Fprint(p.w, "\r\033[K")
}
