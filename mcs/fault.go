package mcs

// Fault points: the named steps of the lock protocol where a test kills the
// process (TestKillAtEveryPoint). Built with the kflexfault tag, fault(pt)
// SIGKILLs the process when the environment variable KFLEX_FAULT names pt
// (or, with KFLEX_FAULT_ACTION=stop, FaultActionStop, SIGSTOPs it there: a
// live party frozen at that step until SIGCONT); without the tag it is an
// empty function, and the calls compile to nothing.
const (
	FaultSwapped    = "swapped"     // after the tail swap, before linking to the predecessor
	FaultLinked     = "linked"      // linked behind the predecessor, not yet head
	FaultParked     = "parked"      // asleep in the queue, not yet head
	FaultHead       = "head"        // the head, running, the lock not yet free
	FaultHeadParked = "head-parked" // the head, asleep on the lock word
	FaultTaken      = "taken"       // holding the lock, the head position not handed on
	FaultGranted    = "granted"     // holding the lock, the successor granted, node not freed
)

// FaultNodeSetUp is in a Go waiter's setup of its node, after the node's
// state says waiting and before its lock field is written: a waiter killed
// there was never queued (TestReapNodeNeverQueued). Like FaultSkipped, it is
// not in FaultPoints.
const FaultNodeSetUp = "node-set-up"

// FaultSkipped is in the Go grant, in a granter (holding the lock) that has
// just skipped and freed an abandoned or dead node and is about to go on to
// the one after it. It is not in FaultPoints, which the stress harness's
// kill schedule indexes (adding points would change every seed's schedule).
const FaultSkipped = "skipped"

// FaultGrantBits is in the Go grant, in a granter (holding the lock) that has
// set the head bits for a parked successor and not yet made it the head: it
// dies holding the lock, with the bits set for a head that never was.
// FaultWakePending is in the Go unlock, in an unlocker that has released the
// lock and set the wake-pending bit for a sleeping head, and not yet issued
// the wake it promised.
// FaultRepairAbandoned and FaultRepairHead are in a waiter's repair around a
// dead predecessor: after it marked the predecessor abandoned and before it
// queued behind the predecessor's predecessor; and after it made itself the
// head and before it freed the nodes it passed. None of these four is in
// FaultPoints (see FaultSkipped).
const (
	FaultGrantBits       = "grant-head-bits"
	FaultWakePending     = "wake-pending"
	FaultRepairAbandoned = "repair-abandoned"
	FaultRepairHead      = "repair-head"
)

// FaultAttachClaimed is a fault point outside the lock protocol: in
// Attach, after the designated thread has claimed its owner slot (the CAS of
// its TID into the liveness word, with the slot's entry as the robust list's
// list_op_pending) and before it links the entry into its robust list.
const FaultAttachClaimed = "attach-claimed"

// FaultDetachUnlisted is in Detach, outside the lock protocol too: after the
// designated thread emptied its robust list and before it freed its slot.
const FaultDetachUnlisted = "detach-unlisted"

// FaultActionStop, as KFLEX_FAULT_ACTION, stops the process at its fault
// point instead of killing it.
const FaultActionStop = "stop"

// FaultPoints lists the fault points in protocol order.
var FaultPoints = []string{FaultSwapped, FaultLinked, FaultParked, FaultHead, FaultHeadParked, FaultTaken, FaultGranted}

// bytecodeFaults are the fault points of the bytecode lock (its runtime
// form), by number - 1: in a build with the kflexfault tag whose KFLEX_FAULT
// names one, the lock calls HelperFault with its number there (lockText's
// "@fault"); otherwise nothing is emitted.
var bytecodeFaults = []string{FaultSwapped, FaultLinked, FaultHead, FaultTaken, FaultGranted}

// FaultHelper is HelperFault: the bytecode lock at its fault point number id.
func FaultHelper(id uint64) {
	if id >= 1 && id <= uint64(len(bytecodeFaults)) {
		fault(bytecodeFaults[id-1])
	}
}
