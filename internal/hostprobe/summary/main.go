// Command summary prints one line per kernel feature (and host tool:
// clang-19) that kflex's tests ask the host for, saying whether the tests that need it ran or skipped, and
// why: make test runs it last on the log the test binaries wrote
// (testutil.FeatureLogEnv), so a skip is never silent in CI output.
//
//	go run ./internal/hostprobe/summary LOG
package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/kflex-go/kflex/internal/hostprobe"
)

type tally struct {
	ran, skipped int
	reasons      map[string]bool
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: summary LOG")
		os.Exit(2)
	}
	tallies := map[string]*tally{}
	f, err := os.Open(os.Args[1])
	if err != nil && !os.IsNotExist(err) {
		fmt.Fprintln(os.Stderr, "summary:", err)
		os.Exit(1)
	}
	if f != nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), "\t")
			if len(fields) != 4 {
				continue
			}
			t := tallies[fields[0]]
			if t == nil {
				t = &tally{reasons: map[string]bool{}}
				tallies[fields[0]] = t
			}
			if fields[1] == "ran" {
				t.ran++
			} else {
				t.skipped++
				t.reasons[fields[2]] = true
			}
		}
		f.Close()
	}
	for _, feat := range hostprobe.All {
		fmt.Println(line(feat, tallies[feat.Name]))
	}
}

func line(feat *hostprobe.Feature, t *tally) string {
	head := feat.What + " " + feat.Name + ": "
	if t == nil {
		answer := "offered"
		if err := feat.Offered(); err != nil {
			answer = strings.TrimPrefix(err.Error(), feat.Name+": ")
		}
		return head + "no test asked for it (host: " + answer + ")"
	}
	var parts []string
	if t.ran > 0 {
		parts = append(parts, fmt.Sprintf("ran in %d tests", t.ran))
	}
	if t.skipped > 0 {
		var why []string
		for _, r := range slices.Sorted(maps.Keys(t.reasons)) {
			why = append(why, strings.TrimPrefix(r, feat.Name+": "))
		}
		parts = append(parts, fmt.Sprintf("SKIPPED in %d tests (%s)", t.skipped, strings.Join(why, "; ")))
	}
	return head + strings.Join(parts, ", ")
}
