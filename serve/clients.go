package serve

import (
	"fmt"
	"net"
	"sort"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/heap"
	"github.com/kflex-go/kflex/mcs"
)

// A connected process, as the runtime knows it: its PID from the socket's
// peer credentials, held as a pidfd (a PID can be reused once its process is
// gone; a pidfd cannot), and the owner-table slot it attached to (the process
// records itself there when it maps the heap).
type peer struct {
	pid   int
	uid   int
	pidfd int
}

// ClientInfo describes one connected process.
type ClientInfo struct {
	PID   int
	Slot  int       // its owner-table slot, or -1 before it has attached
	Since time.Time // when it attached to the heap (zero before)
	Alive bool      // its pidfd says it is running
}

// identify reads c's peer credentials and opens a pidfd on the peer.
func identify(c *net.UnixConn) (peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{}, err
	}
	if cerr != nil {
		return peer{}, fmt.Errorf("peer credentials: %w", cerr)
	}
	pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		return peer{}, fmt.Errorf("pidfd of process %d: %w", cred.Pid, err)
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid), pidfd: pidfd}, nil
}

func (p peer) alive() bool { return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil }

// Clients lists the connected processes, by PID, with the owner-table slot
// each attached to.
func (rt *Runtime) Clients() []ClientInfo {
	slots := map[int]mcs.OwnerState{}
	for _, o := range mcs.Owners(rt.h) {
		if !o.Dead {
			slots[int(o.PID)] = o
		}
	}
	rt.mu.Lock()
	var out []ClientInfo
	for _, p := range rt.conns {
		if p.pidfd < 0 {
			continue // not identified (yet)
		}
		c := ClientInfo{PID: p.pid, Slot: -1, Alive: p.alive()}
		if o, ok := slots[p.pid]; ok {
			c.Slot, c.Since = int(o.Slot), rt.attachedSince(o.Slot)
		}
		out = append(out, c)
	}
	rt.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// attachedSince is when the process in owner slot attached (the time its
// record holds).
func (rt *Runtime) attachedSince(slot uint32) time.Time {
	ns := atomic.LoadUint64(rt.h.Uint64(rt.h.OwnerRecord(slot, heap.OwnerSince)))
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns)).UTC()
}

// gone logs the end of process p's connection, which cancelled calls of
// its that were still running: a death if the kernel marked its owner slot
// (it died attached to the heap), else a detach.
func (rt *Runtime) gone(p peer, cancelled int) {
	for _, o := range mcs.Owners(rt.h) {
		if int(o.PID) == p.pid && o.Dead {
			rt.log.Warn("process died", "pid", p.pid, "slot", o.Slot, "calls_cancelled", cancelled)
			return
		}
	}
	rt.log.Info("process detached", "pid", p.pid, "calls_cancelled", cancelled)
}
