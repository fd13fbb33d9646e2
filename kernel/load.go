package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/bytecode"
)

// ProgramType is the kernel program type a program is loaded as.
type ProgramType uint32

const (
	// XDP programs run on a packet; test runs can repeat, giving per-run times.
	XDP ProgramType = 6 // BPF_PROG_TYPE_XDP
	// Syscall programs run on a caller-supplied context buffer that they may
	// read and write; always sleepable.
	Syscall ProgramType = 31 // BPF_PROG_TYPE_SYSCALL
)

func (t ProgramType) String() string {
	switch t {
	case XDP:
		return "xdp"
	case Syscall:
		return "syscall"
	}
	return fmt.Sprintf("program type %d", uint32(t))
}

const (
	bpfProgLoad    = 5
	bpfFSleepable  = 1 << 4
	verifierLogMax = 1 << 22
)

// progLoadAttr is the prefix of union bpf_attr used by BPF_PROG_LOAD.
type progLoadAttr struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
	progName    [16]byte
}

// VerifierError is the kernel verifier's rejection of a program.
type VerifierError struct {
	Errno unix.Errno
	Log   []string // the verifier's log, line by line
}

func (e *VerifierError) Error() string {
	// The log ends with the reason, then statistics; show the last
	// informative line. Since Linux 7 (seen on 7.3.4) the reason is followed
	// by an explanation, from a line "Verification failed: ..." on (its
	// sections, the failing instruction's context, a suggestion): the
	// reason is the line before it, as on earlier kernels.
	end := len(e.Log)
	for i := len(e.Log) - 1; i >= 0; i-- {
		if strings.HasPrefix(e.Log[i], "Verification failed:") {
			end = i
			break
		}
	}
	reason := ""
	for i := end - 1; i >= 0; i-- {
		l := e.Log[i]
		if l != "" && !strings.HasPrefix(l, "processed ") && !strings.HasPrefix(l, "verification time") &&
			!strings.HasPrefix(l, "stack depth") {
			reason = l
			break
		}
	}
	return fmt.Sprintf("kernel verifier: %v: %s", e.Errno, reason)
}

func (e *VerifierError) Unwrap() error { return e.Errno }

// Program is a program loaded into the kernel.
type Program struct {
	*ebpf.Program
	Type ProgramType
}

// Load loads insns as a program of type typ. maps are the maps its lddw
// instructions reference by file descriptor (an Arena's Ref), kept only to
// document the dependency: the kernel takes its own references at load.
func Load(insns asm.Instructions, typ ProgramType, maps []*ebpf.Map) (*Program, error) {
	raw, err := bytecode.Encode(insns)
	if err != nil {
		return nil, fmt.Errorf("load %v program: %w", typ, err)
	}
	return LoadRaw(raw, typ, maps)
}

// LoadRaw loads raw bytecode; see Load.
func LoadRaw(raw []byte, typ ProgramType, maps []*ebpf.Map) (*Program, error) {
	if len(raw) == 0 || len(raw)%bytecode.SlotSize != 0 {
		return nil, fmt.Errorf("load %v program: bytecode length %d is not a positive multiple of 8", typ, len(raw))
	}
	license := []byte("GPL\x00")
	attr := progLoadAttr{
		progType: uint32(typ),
		insnCnt:  uint32(len(raw) / bytecode.SlotSize),
		insns:    uint64(uintptr(unsafe.Pointer(&raw[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	copy(attr.progName[:], "kflex")
	if typ == Syscall {
		attr.progFlags = bpfFSleepable // the kernel only loads sleepable syscall programs
	}
	fd, errno := progLoad(&attr)
	if errno != 0 {
		// Load again with a log to say why, as libbpf does.
		log := make([]byte, verifierLogMax)
		attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), uint64(uintptr(unsafe.Pointer(&log[0])))
		_, errno2 := progLoad(&attr)
		runtime.KeepAlive(log)
		if errno2 == 0 {
			return nil, fmt.Errorf("load %v program: %w (it loaded with a log; retry)", typ, errno)
		}
		// The log is a C string: the kernel rewinds it over each path it
		// verified safe (level 1 keeps the path that failed), leaving that
		// path's stale text after the NUL, which is not part of the log.
		if end := bytes.IndexByte(log, 0); end >= 0 {
			log = log[:end]
		}
		lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
		return nil, &VerifierError{Errno: errno2, Log: lines}
	}
	runtime.KeepAlive(raw)
	runtime.KeepAlive(license)
	runtime.KeepAlive(maps)
	p, err := ebpf.NewProgramFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("load %v program: %w", typ, err)
	}
	return &Program{Program: p, Type: typ}, nil
}

func progLoad(attr *progLoadAttr) (int, unix.Errno) {
	for {
		fd, _, e := unix.Syscall(unix.SYS_BPF, bpfProgLoad, uintptr(unsafe.Pointer(attr)), unsafe.Sizeof(*attr))
		if e == unix.EAGAIN { // the kernel asks to retry when interrupted
			continue
		}
		return int(fd), e
	}
}

// ErrWrongType is returned when a run is asked of a program type that cannot do it.
var ErrWrongType = errors.New("wrong program type for this run")
