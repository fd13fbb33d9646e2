package serve

import (
	"encoding/binary"
	"unsafe"
)

func putU64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

func unsafePointer(p *uint32) unsafe.Pointer { return unsafe.Pointer(p) }
