package serve

import (
	"fmt"
	"net"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/kflex-go/kflex/mcs"
)

// A connected process, as the runtime knows it: its PID from the socket's
// peer credentials, held as a pidfd (a PID can be reused once its process is
// gone; a pidfd cannot), and the owner-table slot it attached to (the process
// records itself there when it maps the heap).
type peer struct {
	pid   int
	pidfd int
}

// ClientInfo describes one connected process.
type ClientInfo struct {
	PID   int
	Slot  int  // its owner-table slot, or -1 before it has attached
	Alive bool // its pidfd says it is running
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
	return peer{pid: int(cred.Pid), pidfd: pidfd}, nil
}

func (p peer) alive() bool { return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil }

// Clients lists the connected processes, by PID, with the owner-table slot
// each attached to.
func (rt *Runtime) Clients() []ClientInfo {
	slots := map[int]int{}
	for _, o := range mcs.Owners(rt.h) {
		if !o.Dead {
			slots[int(o.PID)] = int(o.Slot)
		}
	}
	rt.mu.Lock()
	var out []ClientInfo
	for _, p := range rt.conns {
		if p.pidfd < 0 {
			continue // not identified (yet)
		}
		slot, ok := slots[p.pid]
		if !ok {
			slot = -1
		}
		out = append(out, ClientInfo{PID: p.pid, Slot: slot, Alive: p.alive()})
	}
	rt.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}
