package main

import (
	"fmt"
	"io"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/rseq"
)

func init() {
	commands["rseq-check"] = command{summary: "report rseq and time-slice-extension support, and test it where present", run: runRseqCheck}
}

func runRseqCheck(args []string, out io.Writer) error {
	fs := newFlags("rseq-check", "[--duration D]", `Report what this kernel and process offer for rseq and the time-slice
extension kflex's lock holders request. Where the extension exists, run a short
test in the style of the kernel's selftest: a noise thread on the same CPU, and
count the critical sections that were never interrupted, extended (then
yielded), or interrupted without an extension.`, out)
	duration := fs.Duration("duration", time.Second, "length of the test where the extension exists (1ms to 1h)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := badFlags("rseq-check", inRange("duration", *duration, time.Millisecond, time.Hour)); err != nil {
		return err
	}
	f := rseq.Probe()
	yesNo := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(out, "rseq system call:        %s\n", yesNo[f.Rseq])
	fmt.Fprintf(out, "rseq feature size/align: %d/%d (auxv; 0 = not reported)\n", f.FeatureSize, f.Align)
	fmt.Fprintf(out, "slice extension:         %s", yesNo[f.SliceExtension])
	if !f.SliceExtension {
		fmt.Fprintf(out, " (%s)", f.SliceReason)
	}
	fmt.Fprintln(out)
	if f.SliceNsec > 0 {
		fmt.Fprintf(out, "extension length:        %d ns (debugfs)\n", f.SliceNsec)
	} else {
		fmt.Fprintln(out, "extension length:        unreadable (needs debugfs and the feature)")
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	th := rseq.Register()
	defer th.Unregister()
	fmt.Fprintf(out, "this thread:             %v", th.Status())
	if th.Status() != rseq.SliceExtension && th.Reason() != "" {
		fmt.Fprintf(out, " (%s)", th.Reason())
	}
	fmt.Fprintf(out, ", cpu %d\n", th.CPU())
	if th.Status() != rseq.SliceExtension {
		fmt.Fprintln(out, "test: not run. kflex locks fall back to spin-then-park, which keeps throughput under\n"+
			"oversubscription (BenchmarkOversubscribedThreads in package mcs).")
		return nil
	}
	held, granted, lost := sliceTest(th, *duration)
	fmt.Fprintf(out, "test (%v): %d sections held without interruption, %d extended and yielded, %d interrupted without extension\n",
		*duration, held, granted, lost)
	return nil
}

// sliceTest pins this thread and a noise thread to one CPU and runs short
// critical sections under a slice request.
func sliceTest(th *rseq.Thread, d time.Duration) (held, granted, lost int) {
	cpu := th.CPU()
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the noise: busy 2 µs, sleep 50 µs, on the same CPU
		defer close(done)
		runtime.LockOSThread()
		unix.SchedSetaffinity(0, &set)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for t := time.Now(); time.Since(t) < 2*time.Microsecond; {
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()
	for end := time.Now().Add(d); time.Now().Before(end); {
		th.Request()
		for t := time.Now(); time.Since(t) < 2*time.Microsecond; {
		}
		switch req, gr := th.State(); {
		case gr:
			granted++
		case req:
			held++
		default:
			lost++
		}
		th.Release()
	}
	close(stop)
	<-done
	return held, granted, lost
}
