package rseq

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/abi"
)

// Features describes what this kernel and process offer.
type Features struct {
	Rseq        bool   // the rseq system call exists
	FeatureSize uint32 // AT_RSEQ_FEATURE_SIZE (0: kernel does not say)
	Align       uint32 // AT_RSEQ_ALIGN
	// SliceExtension is true when a registered thread could enable the slice
	// extension; SliceReason says why not otherwise.
	SliceExtension bool
	SliceReason    string
	// SliceNsec is the extension's length from debugfs (0 if unreadable).
	SliceNsec int64
	Cgo       bool // built with cgo: glibc may own threads' rseq
}

var (
	featuresOnce sync.Once
	features     Features
)

// Probe reports the features, probing once per process. The slice-extension
// probe registers and unregisters a throwaway area on a locked thread.
func Probe() Features {
	featuresOnce.Do(func() { features = probe() })
	return features
}

func probe() Features {
	f := Features{Cgo: cgoEnabled}
	_, _, e := unix.RawSyscall6(unix.SYS_RSEQ, 0, 0, 0, 0, 0, 0)
	f.Rseq = e != unix.ENOSYS
	if auxv, err := unix.Auxv(); err == nil {
		for _, kv := range auxv {
			switch kv[0] {
			case atRseqFeatureSize:
				f.FeatureSize = uint32(kv[1])
			case atRseqAlign:
				f.Align = uint32(kv[1])
			}
		}
	}
	if b, err := os.ReadFile(sliceExtNsecDebugFS); err == nil {
		f.SliceNsec, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if !f.Rseq {
		f.SliceReason = "no rseq system call (CONFIG_RSEQ)"
		return f
	}
	// The kernel's answer to a query needs no registration.
	if _, _, e := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_RSEQ_SLICE_EXTENSION, unix.PR_RSEQ_SLICE_EXTENSION_GET,
		0, 0, 0, 0); e != 0 {
		f.SliceReason = sliceExtError(e)
		return f
	}
	done := make(chan struct{})
	go func() {
		// A throwaway thread: its registration dies with it.
		defer close(done)
		lockThread()
		t := register(f)
		f.SliceExtension = t.status == SliceExtension
		f.SliceReason = t.reason
		t.Unregister()
		// The thread stays locked and exits with this goroutine.
	}()
	<-done
	return f
}

// Register registers an rseq area for the calling OS thread and, where the
// kernel has it, enables the slice extension. The caller must hold
// runtime.LockOSThread until after Unregister. It never fails: what the
// thread got is in Status.
func Register() *Thread { return register(Probe()) }

func register(f Features) *Thread {
	if !f.Rseq {
		return &Thread{yield: sliceYield, status: NoRseq, reason: "no rseq system call"}
	}
	mem, err := unix.MmapPtr(-1, 0, nil, uintptr(os.Getpagesize()), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return &Thread{yield: sliceYield, status: NoRseq, reason: fmt.Sprintf("map rseq area: %v", err)}
	}
	t := registerAt(f, mem)
	if t.area == nil {
		unix.MunmapPtr(mem, uintptr(os.Getpagesize()))
	} else {
		t.owned = true
	}
	return t
}

// AreaSize and AreaAlign are what RegisterAt needs of its memory.
const (
	AreaSize  = 64
	AreaAlign = 64
)

// RegisterAt is Register with an area the caller provides: AreaSize bytes at
// an address aligned to AreaAlign, zeroed, that stays mapped until Unregister.
// Extension executors put it in the heap, so that extension code can write the
// slice-request byte with an ordinary (guarded) store.
func RegisterAt(area unsafe.Pointer) *Thread {
	f := Probe()
	if !f.Rseq {
		return &Thread{yield: sliceYield, status: NoRseq, reason: "no rseq system call"}
	}
	if uintptr(area)%AreaAlign != 0 || max(f.FeatureSize, origSize) > AreaSize || max(f.Align, minAlign) > AreaAlign {
		return &Thread{yield: sliceYield, status: NoRseq, reason: fmt.Sprintf(
			"rseq area %p: the kernel wants %d bytes aligned to %d", area, f.FeatureSize, f.Align)}
	}
	return registerAt(f, area)
}

func registerAt(f Features, mem unsafe.Pointer) *Thread {
	t := &Thread{yield: sliceYield}
	size := uint32(max(f.FeatureSize, origSize))
	*(*uint32)(unsafe.Add(mem, offCPUID)) = ^uint32(0) // RSEQ_CPU_ID_UNINITIALIZED
	_, _, e := unix.RawSyscall6(unix.SYS_RSEQ, uintptr(mem), uintptr(size), 0, signature, 0, 0)
	switch e {
	case 0:
	case unix.EINVAL, unix.EBUSY, unix.EPERM:
		t.status, t.reason = Foreign, fmt.Sprintf("this thread's rseq is already registered elsewhere (%v)", e)
		return t
	default:
		t.status, t.reason = NoRseq, fmt.Sprintf("rseq: %v", e)
		return t
	}
	t.setArea(mem)
	t.status = Registered
	t.size = size
	_, _, e = unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_RSEQ_SLICE_EXTENSION, unix.PR_RSEQ_SLICE_EXTENSION_SET,
		unix.PR_RSEQ_SLICE_EXT_ENABLE, 0, 0, 0)
	if e == 0 {
		t.status = SliceExtension
	} else {
		t.reason = sliceExtError(e)
	}
	return t
}

// sliceExtError says what an error from the slice-extension prctl means.
func sliceExtError(e unix.Errno) string {
	switch e {
	case unix.EINVAL:
		return sliceExtMissingReason
	case errnoENOTSUPP:
		return "rseq time-slice extension disabled at boot (rseq_slice_ext=0)"
	}
	return fmt.Sprintf("enable rseq time-slice extension: %v", e)
}

// Unregister removes the registration; after it the Thread does nothing.
func (t *Thread) Unregister() error {
	if t.area == nil {
		return nil
	}
	_, _, e := unix.RawSyscall6(unix.SYS_RSEQ, uintptr(t.area), uintptr(t.size), flagUnregister, signature, 0, 0)
	if e != 0 {
		return fmt.Errorf("unregister rseq: %w", e)
	}
	var err error
	if t.owned {
		err = unix.MunmapPtr(t.area, uintptr(os.Getpagesize()))
	}
	t.setArea(nil)
	t.status = NoRseq
	return err
}

// Yield is rseq_slice_yield(2): the call a thread makes when it finds its
// time slice was extended. Extension executors call it for bytecode.
func Yield() { sliceYield() }

// RequestByte is the address of the area's slice-request byte (0 when not
// registered); the granted byte follows it.
func (t *Thread) RequestByte() uintptr {
	if t.area == nil {
		return 0
	}
	return uintptr(t.area) + offSliceReq
}

// Flags returns the area's read-only status flags (0 when not registered).
func (t *Thread) Flags() uint32 {
	if t.area == nil {
		return 0
	}
	return *(*uint32)(unsafe.Add(t.area, offFlags))
}

func sliceYield() { unix.RawSyscall(unix.SYS_RSEQ_SLICE_YIELD, 0, 0, 0) }

func getcpu() int {
	var cpu uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), 0, 0); e != 0 {
		return -1
	}
	return int(cpu)
}

// ErrNotSupported is wrapped by errors about missing kernel features: kflex's
// one (abi.ErrNotSupported).
var ErrNotSupported = abi.ErrNotSupported

// HaveSliceExtension returns nil where the slice extension works, else an error
// naming what is missing that wraps ErrNotSupported.
func HaveSliceExtension() error {
	f := Probe()
	if f.SliceExtension {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotSupported, f.SliceReason)
}
