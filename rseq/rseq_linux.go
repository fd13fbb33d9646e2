package rseq

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
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
	t := &Thread{yield: sliceYield}
	if !f.Rseq {
		t.status, t.reason = NoRseq, "no rseq system call"
		return t
	}
	size := uint32(max(f.FeatureSize, origSize))
	align := max(f.Align, minAlign)
	_ = align // the area is page-aligned, which satisfies any alignment the kernel asks
	mem, err := unix.MmapPtr(-1, 0, nil, uintptr(os.Getpagesize()), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.status, t.reason = NoRseq, fmt.Sprintf("map rseq area: %v", err)
		return t
	}
	*(*uint32)(unsafe.Add(mem, offCPUID)) = ^uint32(0) // RSEQ_CPU_ID_UNINITIALIZED
	_, _, e := unix.RawSyscall6(unix.SYS_RSEQ, uintptr(mem), uintptr(size), 0, signature, 0, 0)
	switch e {
	case 0:
	case unix.EINVAL, unix.EBUSY, unix.EPERM:
		unix.MunmapPtr(mem, uintptr(os.Getpagesize()))
		t.status, t.reason = Foreign, fmt.Sprintf("this thread's rseq is already registered elsewhere (%v)", e)
		return t
	default:
		unix.MunmapPtr(mem, uintptr(os.Getpagesize()))
		t.status, t.reason = NoRseq, fmt.Sprintf("rseq: %v", e)
		return t
	}
	t.area, t.status = mem, Registered
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
	err := unix.MunmapPtr(t.area, uintptr(os.Getpagesize()))
	t.area, t.status = nil, NoRseq
	return err
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

// ErrNotSupported is wrapped by errors about missing kernel features.
var ErrNotSupported = errors.New("not supported")

// HaveSliceExtension returns nil where the slice extension works, else an error
// naming what is missing that wraps ErrNotSupported.
func HaveSliceExtension() error {
	f := Probe()
	if f.SliceExtension {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotSupported, f.SliceReason)
}
