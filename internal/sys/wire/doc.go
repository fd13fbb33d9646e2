// Package wire is the socket protocol between the extension runtime (serve)
// and the processes attached to it (userspace.Dial): the messages' layouts,
// their encoding and decoding, and the errors a peer gets when a message is
// not what this build speaks.
//
// It belongs to the system-plumbing layer, the bottom one: it imports only the
// standard library and golang.org/x/sys/unix, so that both sides use it
// without either importing the other.
//
// The transport is a SOCK_SEQPACKET unix socket: every message is one packet,
// delivered whole or not at all. Integers are little-endian. Version 3:
//
//	runtime → process, on connect:  hello   = magic[8] version u32 heapSize u64
//	                                kind u32, with the descriptor to map the heap
//	                                from (SCM_RIGHTS): a heap file or memfd (kind
//	                                HeapFile), or a BPF arena map (kind HeapArena)
//	process → runtime:              request = op u32 id u64 arg u64 name[1..64]
//	runtime → process:              result  = status u32 id u64 r0 u64 message...
//
// OpInvoke runs the extension called name with argument arg; OpCancel and
// OpCancelProgram cancel invocations; OpStatus asks what the runtime runs,
// answered with status 2 (success with a payload: a Status in JSON, at most
// MaxData bytes); OpGlobal finds a global variable of the extensions by name.
// Ops were added within version 3: a runtime answers an op it does not know
// with a failure naming it (IsUnknownOp). A process may have many requests in flight on one connection; the runtime
// serves them concurrently and answers each with a result carrying the
// request's id, in any order. Ids are the process's choice; 0 is reserved:
// a result with id 0 answers a request too short to carry an id, and the
// runtime closes the connection after sending it. Status 0 is success (r0 is
// the extension's result); status 1 is failure, r0 the failure's kind (Code:
// failed, no such program, rejected, cancelled) and message says what
// failed. The codes came after version 3 and keep to it: a runtime from
// before sends 0 (failed), and a client from before ignores r0 on failure.
package wire
