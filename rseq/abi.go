package rseq

// The struct rseq ABI (include/uapi/linux/rseq.h), as byte offsets.
const (
	offCPUIDStart = 0  // u32
	offCPUID      = 4  // u32: current CPU, or a negative "uninitialised"/"failed" value
	offRseqCS     = 8  // u64
	offFlags      = 16 // u32: read-only status bits; never written by user space
	offNodeID     = 20 // u32
	offMMCID      = 24 // u32
	offSliceReq   = 28 // u8: slice_ctrl.request, set by user space
	offSliceGrant = 29 // u8: slice_ctrl.granted, set by the kernel

	// origSize is the original struct rseq; kernels accept no less.
	origSize = 32
	// minAlign is the original alignment of struct rseq.
	minAlign = 32
)

// Status bits in struct rseq's flags.
const (
	flagSliceExtAvailable = 0x10
	flagSliceExtEnabled   = 0x20
)

// System interface constants not in golang.org/x/sys.
const (
	flagUnregister        = 1 << 0 // RSEQ_FLAG_UNREGISTER
	atRseqFeatureSize     = 27     // AT_RSEQ_FEATURE_SIZE
	atRseqAlign           = 28     // AT_RSEQ_ALIGN
	errnoENOTSUPP         = 524    // ENOTSUPP: kernel-internal "not supported" (disabled at boot)
	signature             = 0x53053053
	sliceExtNsecDebugFS   = "/sys/kernel/debug/rseq/slice_ext_nsec"
	sliceExtMinKernel     = "7.0"
	sliceExtMissingReason = "requires Linux " + sliceExtMinKernel + " (missing rseq time-slice extension)"
)
