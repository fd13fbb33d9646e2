package bytecode

import "encoding/binary"

// nativeEndian is the byte order of eBPF on the machines kflex supports (amd64,
// arm64): little-endian. Bytecode is always read and written in it.
var nativeEndian = binary.LittleEndian
