// Package wire is the socket protocol between the extension runtime (serve)
// and the processes attached to it (userspace.Dial): the messages' layouts,
// their encoding and decoding, and the errors a peer sees when a message is
// not what this build speaks.
//
// It belongs to the system-plumbing layer, the bottom one: it imports only the
// standard library and golang.org/x/sys/unix, so that both sides can use it
// without either importing the other.
//
// The transport is a SOCK_SEQPACKET unix socket: every message is one packet,
// delivered whole or not at all. All integers are little-endian.
//
//	runtime → process, on connect:  hello  = magic[8] version u32 heapSize u64
//	                                kind u32, with the descriptor to map the heap
//	                                from (SCM_RIGHTS): a heap file or memfd (kind
//	                                HeapFile), or a BPF arena map (kind HeapArena)
//	process → runtime:              invoke = op u32 (1) arg u64 name...
//	runtime → process:              result = status u32 r0 u64 message...
//
// status 0 is success; otherwise message says what failed.
package wire
