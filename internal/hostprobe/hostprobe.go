// Package hostprobe asks the host kernel, with raw system calls and no kflex
// code, whether it offers a feature some tests need: BPF program loads and
// test runs, BPF arenas, the rseq time-slice extension, real-time scheduling; and whether clang-19,
// which builds the tests' C extensions, is installed. Its answer decides whether those tests run or skip,
// so it must not depend on the code under test: a kflex regression then shows
// as a failure of a test that ran, never as a skip.
//
// Layer 0 (system plumbing): it imports only the standard library and
// golang.org/x/sys/unix.
package hostprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Feature is something of the host's that some tests need, with the one
// raw probe that asks for it.
type Feature struct {
	Name  string
	What  string // "kernel feature", or "host tool" (a program tests run)
	probe func() error

	once sync.Once
	err  error
}

// Refusal is the host's no: the call it refused and the errno it gave.
type Refusal struct {
	Feature string
	Call    string // "BPF_MAP_CREATE(ARENA)"
	Errno   unix.Errno
}

func (r *Refusal) Error() string {
	name := unix.ErrnoName(r.Errno)
	if name == "" {
		name = fmt.Sprintf("errno %d", int(r.Errno))
	}
	msg := fmt.Sprintf("%s: the kernel refuses %s: %s", r.Feature, r.Call, name)
	if r.Errno == unix.EPERM && os.Geteuid() != 0 {
		msg += " (not root)"
	}
	return msg
}

func (r *Refusal) Unwrap() error { return r.Errno }

// Missing is the host's no to a host tool: the program that is not on the
// PATH, and how to install it.
type Missing struct {
	Feature string
	Program string // "clang-19"
	Install string // "apt-get install clang-19"
	Err     error  // exec.LookPath's answer
}

func (m *Missing) Error() string {
	return fmt.Sprintf("%s: %s is not on the PATH (%s)", m.Feature, m.Program, m.Install)
}

func (m *Missing) Unwrap() error { return m.Err }

// Offered runs the feature's probe once per process and returns nil where the
// host offers it, a *Refusal where its kernel refuses it, a *Missing where a
// host tool is not installed.
func (f *Feature) Offered() error {
	f.once.Do(func() {
		f.err = f.probe()
		var r *Refusal
		if errors.As(f.err, &r) {
			r.Feature = f.Name
		}
		var m *Missing
		if errors.As(f.err, &m) {
			m.Feature = f.Name
		}
	})
	return f.err
}

// New is a feature with the given probe: for tests of decisions made on a
// probe's answer.
func New(name string, probe func() error) *Feature {
	return &Feature{Name: name, What: "kernel feature", probe: probe}
}

// Tool is the host tool program, offered where it is on the PATH; install
// says how to install it where it is not.
func Tool(program, install string) *Feature {
	return &Feature{Name: program, What: "host tool", probe: func() error {
		if _, err := exec.LookPath(program); err != nil {
			return &Missing{Program: program, Install: install, Err: err}
		}
		return nil
	}}
}

// The features kflex's tests ask for.
var (
	// Programs: a sleepable syscall program and an XDP program load, and a
	// test run of the first (what kflex's kernel oracle does).
	Programs = New("BPF programs", probePrograms)
	// Arena: a one-page BPF arena is created and mapped.
	Arena = New("BPF arena", probeArena)
	// SliceExtension: the kernel answers a query of the rseq time-slice
	// extension (Linux 7.0+ with CONFIG_RSEQ_SLICE_EXTENSION).
	SliceExtension = New("rseq time-slice extension", probeSliceExtension)
	// Realtime: a thread may move itself into SCHED_FIFO (CAP_SYS_NICE or an
	// RLIMIT_RTPRIO, and no cgroup that forbids it).
	Realtime = New("real-time scheduling", probeRealtime)
	// Clang: clang-19 is on the PATH, which builds the C extensions of the
	// tests (BPF objects).
	Clang = Tool(ClangName, "apt-get install clang-19")
)

// All is every feature, in the order the test summary lists them.
var All = []*Feature{Programs, Arena, SliceExtension, Realtime, Clang}

// ClangName is the C compiler the tests build extensions with.
const ClangName = "clang-19"

func probeSliceExtension() error {
	_, _, errno := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_RSEQ_SLICE_EXTENSION, unix.PR_RSEQ_SLICE_EXTENSION_GET, 0, 0, 0, 0)
	if errno != 0 {
		return &Refusal{Call: "prctl(PR_RSEQ_SLICE_EXTENSION_GET)", Errno: errno}
	}
	return nil
}

// probeRealtime asks on a thread of its own, which exits with its answer, so
// that no thread of the test process is left at a real-time priority.
func probeRealtime() error {
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}
		_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETATTR, 0, uintptr(unsafe.Pointer(&attr)), 0)
		if errno != 0 {
			errc <- &Refusal{Call: "sched_setattr(SCHED_FIFO, 1)", Errno: errno}
			return
		}
		// Back to normal too: a goroutine locked to the main thread
		// parks that thread at its end instead of ending it.
		attr = unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
		unix.RawSyscall(unix.SYS_SCHED_SETATTR, 0, uintptr(unsafe.Pointer(&attr)), 0)
		errc <- nil
	}()
	return <-errc
}

const (
	cmdMapCreate = 0
	cmdProgLoad  = 5
	cmdTestRun   = 10

	progTypeXDP     = 6
	progTypeSyscall = 31
	mapTypeArena    = 33

	flagMmapable  = 1 << 10 // BPF_F_MMAPABLE
	flagSleepable = 1 << 4  // BPF_F_SLEEPABLE
)

// bpf is the bpf(2) system call, retried where the kernel asks (EAGAIN).
func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, unix.Errno) {
	for {
		r, _, e := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
		if e != unix.EAGAIN {
			return int(r), e
		}
	}
}

// returnZero is "mov r0, 0; exit", encoded by hand (RFC 9669).
var returnZero = func() []byte {
	b := make([]byte, 16)
	b[0] = 0xb7 // ALU64 | MOV | K
	b[8] = 0x95 // JMP | EXIT
	return b
}()

// progAttr is the prefix of union bpf_attr for BPF_PROG_LOAD.
type progAttr struct {
	progType, insnCnt uint32
	insns, license    uint64
	logLevel, logSize uint32
	logBuf            uint64
	kernVersion       uint32
	progFlags         uint32
	progName          [16]byte
}

func loadProgram(typ, flags uint32, call string) (int, error) {
	license := []byte("GPL\x00")
	attr := progAttr{
		progType:  typ,
		insnCnt:   uint32(len(returnZero) / 8),
		insns:     uint64(uintptr(unsafe.Pointer(&returnZero[0]))),
		license:   uint64(uintptr(unsafe.Pointer(&license[0]))),
		progFlags: flags,
	}
	fd, errno := bpf(cmdProgLoad, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, &Refusal{Call: call, Errno: errno}
	}
	return fd, nil
}

// testRunAttr is the prefix of union bpf_attr for BPF_PROG_TEST_RUN.
type testRunAttr struct {
	progFD, retval           uint32
	dataSizeIn, dataSizeOut  uint32
	dataIn, dataOut          uint64
	repeat, duration         uint32
	ctxSizeIn, ctxSizeOut    uint32
	ctxIn, ctxOut            uint64
	flags, cpu, batchSize, _ uint32
}

func probePrograms() error {
	fd, err := loadProgram(progTypeSyscall, flagSleepable, "BPF_PROG_LOAD(SYSCALL)")
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	run := testRunAttr{progFD: uint32(fd)}
	if _, errno := bpf(cmdTestRun, unsafe.Pointer(&run), unsafe.Sizeof(run)); errno != 0 {
		return &Refusal{Call: "BPF_PROG_TEST_RUN(SYSCALL)", Errno: errno}
	}
	xdp, err := loadProgram(progTypeXDP, 0, "BPF_PROG_LOAD(XDP)")
	if err != nil {
		return err
	}
	return unix.Close(xdp)
}

// mapAttr is the prefix of union bpf_attr for BPF_MAP_CREATE, up to map_extra.
type mapAttr struct {
	mapType, keySize, valueSize, maxEntries, mapFlags, innerMapFD, numaNode uint32
	mapName                                                                 [16]byte
	ifIndex, btfFD, btfKeyTypeID, btfValueTypeID, btfVmlinuxValueTypeID     uint32
	mapExtra                                                                uint64
}

func probeArena() error {
	attr := mapAttr{mapType: mapTypeArena, maxEntries: 1, mapFlags: flagMmapable}
	fd, errno := bpf(cmdMapCreate, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if errno != 0 {
		return &Refusal{Call: "BPF_MAP_CREATE(ARENA)", Errno: errno}
	}
	defer unix.Close(fd)
	page := os.Getpagesize()
	mem, err := unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			return err
		}
		return &Refusal{Call: "mmap of a BPF arena", Errno: errno}
	}
	binary.LittleEndian.PutUint64(mem, 1) // a write faults the page in
	return unix.Munmap(mem)
}
