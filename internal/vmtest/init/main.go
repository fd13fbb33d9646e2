// Command init is the /init of the virtual machine that make test-kernel boots
// (internal/vmtest/run.sh builds it, static, into the initramfs with the test
// binaries): it mounts what the tests need, asks the kernel for BPF programs
// and arenas with the same raw probes as the tests (internal/hostprobe), runs
// every test binary the plan names in its package's directory, prints one
// "KFLEX-VM: PASS|FAIL" line per package, the feature summary, and a last line
// "KFLEX-VM-RESULT: ok|fail" that the host turns into its exit status, then
// powers the machine off.
//
// The result is "fail" when a test binary fails, when the kernel refuses BPF
// programs or arenas, when any test skipped for want of one of them, or when
// no test ran on an arena: the machine exists so that those tests run.
//
// The plan (/kflex/plan) has one line per test binary: the directory to run
// it in, the binary, then its arguments, separated by tabs.
//
// With the argument "bootcheck" (the kernel command line's "-- bootcheck")
// it only mounts, probes and powers off: run.sh boots that first to learn
// whether KVM can run this kernel here.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/internal/hostprobe"
)

const (
	planPath   = "/kflex/plan"
	featureLog = "/tmp/kernel-features.log"
	summaryBin = "/kflex/bin/summary"
)

func main() {
	ok := run()
	result := "ok"
	if !ok {
		result = "fail"
	}
	fmt.Printf("KFLEX-VM-RESULT: %s\n", result)
	os.Stdout.Sync()
	unix.Sync()
	// A Go program as PID 1 that returns panics the kernel; power off instead
	// (qemu runs with -no-reboot, so even a panic ends the machine).
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() bool {
	if err := mountAll(); err != nil {
		fmt.Printf("KFLEX-VM: setup failed: %v\n", err)
		return false
	}
	var u unix.Utsname
	unix.Uname(&u)
	fmt.Printf("KFLEX-VM: kernel %s, %d CPUs, up %s\n", unix.ByteSliceToString(u.Release[:]), cpus(), uptime())
	if len(os.Args) > 1 && os.Args[1] == "bootcheck" {
		return true
	}

	ok := true
	for _, f := range []*hostprobe.Feature{hostprobe.Programs, hostprobe.Arena} {
		if err := f.Offered(); err != nil {
			fmt.Printf("KFLEX-VM: probe %s: REFUSED: %v\n", f.Name, err)
			ok = false
		} else {
			fmt.Printf("KFLEX-VM: probe %s: offered\n", f.Name)
		}
	}

	plan, err := readPlan()
	if err != nil {
		fmt.Printf("KFLEX-VM: %v\n", err)
		return false
	}
	env := append(os.Environ(),
		"PATH=/kflex/bin:/bin",
		"HOME=/tmp",
		"TMPDIR=/tmp",
		"KFLEX_FEATURE_LOG="+featureLog,
	)
	var lines []string
	for _, p := range plan {
		line, passed := runOne(p, env)
		lines = append(lines, line)
		ok = ok && passed
	}

	fmt.Println("KFLEX-VM: ---- packages ----")
	for _, l := range lines {
		fmt.Println(l)
	}
	fmt.Println("KFLEX-VM: ---- features (internal/hostprobe/summary) ----")
	cmd := exec.Command(summaryBin, featureLog)
	cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdout, os.Stdout, env
	if err := cmd.Run(); err != nil {
		fmt.Printf("KFLEX-VM: summary: %v\n", err)
		ok = false
	}
	skips, arenaRan := kernelLog()
	fmt.Printf("KFLEX-VM: the tests that ran on a BPF arena: %s\n", strings.Join(arenaRan, " "))
	if len(arenaRan) == 0 {
		fmt.Println("KFLEX-VM: no test ran on a BPF arena")
		ok = false
	}
	if len(skips) > 0 {
		fmt.Printf("KFLEX-VM: %d tests skipped a kernel feature inside the VM, where it must be offered:\n", len(skips))
		for _, s := range skips {
			fmt.Println("KFLEX-VM:   " + s)
		}
		ok = false
	}
	return ok
}

type step struct {
	dir, bin string
	args     []string
}

func readPlan() ([]step, error) {
	f, err := os.Open(planPath)
	if err != nil {
		return nil, fmt.Errorf("no plan: %w", err)
	}
	defer f.Close()
	var plan []step
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		plan = append(plan, step{dir: fields[0], bin: fields[1], args: fields[2:]})
	}
	return plan, sc.Err()
}

// runOne runs one test binary in its package's directory with the console
// as its output, and returns its line for the summary and whether it passed.
func runOne(p step, env []string) (string, bool) {
	name := strings.TrimPrefix(p.dir, "/kflex/src/")
	fmt.Printf("KFLEX-VM: ==== %s: %s %s\n", name, filepath.Base(p.bin), strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir, cmd.Env = p.dir, env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	// Its own process group, so that what it leaves behind can be found.
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(100 * time.Millisecond)
	left := reapStrays()
	verdict := "PASS"
	detail := ""
	if err != nil {
		verdict, detail = "FAIL", " ("+err.Error()+")"
	}
	if left > 0 {
		detail += fmt.Sprintf(" [%d processes left behind, killed]", left)
	}
	line := fmt.Sprintf("KFLEX-VM: %s %s %s%s", verdict, name, took, detail)
	fmt.Println(line)
	return line, err == nil
}

// reapStrays kills every process but this one (what a test binary left
// behind: its children are the only other processes in the machine) and
// collects the dead, returning how many there were.
func reapStrays() int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || isKernelThread(pid) {
			continue
		}
		if unix.Kill(pid, unix.SIGKILL) == nil {
			n++
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil { // ECHILD: none left
			break
		}
		if pid == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return n
}

// isKernelThread: kernel threads have no command line.
func isKernelThread(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err != nil || len(b) == 0
}

// kernelLog reads the feature log: the lines of tests that skipped BPF
// programs or arenas, and the tests that ran on an arena.
func kernelLog() (skips, arenaRan []string) {
	b, err := os.ReadFile(featureLog)
	if err != nil {
		return nil, nil
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 4 || (f[0] != hostprobe.Programs.Name && f[0] != hostprobe.Arena.Name) {
			continue
		}
		switch {
		case f[1] == "skipped":
			skips = append(skips, f[3]+": "+f[2])
		case f[0] == hostprobe.Arena.Name:
			arenaRan = append(arenaRan, f[3])
		}
	}
	return skips, arenaRan
}

func mountAll() error {
	mounts := []struct{ src, dir, fstype, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", ""},
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "/dev/shm", "tmpfs", "mode=1777"},
		{"bpffs", "/sys/fs/bpf", "bpf", ""},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", ""},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dir, m.fstype, 0, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
		if m.dir == "/dev" {
			if err := consoleStdio(); err != nil {
				return err
			}
		}
	}
	return loopbackUp()
}

// loopbackUp brings up lo: tests talk to servers on 127.0.0.1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// consoleStdio makes /dev/console this process's standard input and output,
// in case the kernel found none in the initramfs.
func consoleStdio() error {
	fd, err := unix.Open("/dev/console", unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open /dev/console: %w", err)
	}
	for _, to := range []int{0, 1, 2} {
		if fd != to {
			if err := unix.Dup3(fd, to, 0); err != nil {
				return err
			}
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	return nil
}

func cpus() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return 0
	}
	return set.Count()
}

// uptime is the kernel's: how long the machine took to boot to init.
func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0] + "s"
}
