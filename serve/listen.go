package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrAlreadyServing: another kflex runtime answers at the socket path.
// ErrNotSocket: the path is some other file, which Listen leaves alone.
var (
	ErrAlreadyServing = errors.New("a kflex runtime is already serving")
	ErrNotSocket      = errors.New("not a socket")
)

// ListenOptions say how Listen creates the socket.
type ListenOptions struct {
	// Mode is the socket file's permissions (0: what the umask leaves of
	// 0777). Connecting takes write permission. It must leave the owner
	// read and write permission and name no bits but the permission bits.
	Mode os.FileMode
	// Logger hears of a stale socket replaced (nil: nobody).
	Logger *slog.Logger
}

// Listen listens for attached processes at the unix socket path. A socket
// file left at path by a runtime that could not remove it (it was killed)
// is stale: nothing accepts on it, so connecting is refused. Listen then
// replaces it, saying so on the logger. A socket something answers on, or a
// file that is not a socket, is refused: the error names path.
//
// With a Mode, the socket never has wider permissions than Mode: its inode
// gets Mode before it is bound (Linux creates the file with the socket's
// mode less the umask), and the file is then changed to Mode exactly.
//
// Two runtimes starting at once on one stale path can both find it stale;
// the later replaces the earlier's socket. Listen does not guard against
// that race.
func Listen(path string, o ListenOptions) (*net.UnixListener, error) {
	if err := CheckSocketMode(o.Mode); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln, err := listenMode(path, o.Mode)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		if err := checkStale(&net.UnixAddr{Name: path, Net: "unixpacket"}); err != nil {
			return nil, err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
		if o.Logger != nil {
			o.Logger.Warn("replaced a stale socket: no runtime answered on it", "socket", path)
		}
		ln, err = listenMode(path, o.Mode)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if o.Mode != 0 {
		// The umask may have taken bits away; none were ever added.
		if err := os.Chmod(path, o.Mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
	}
	return ln, nil
}

// CheckSocketMode says what is wrong with mode as ListenOptions.Mode.
func CheckSocketMode(mode os.FileMode) error {
	switch {
	case mode == 0:
		return nil
	case mode&^os.ModePerm != 0:
		return fmt.Errorf("socket mode %#o: only permission bits (at most 0777)", uint32(mode))
	case mode&0o600 != 0o600:
		return fmt.Errorf("socket mode %#o: the owner needs read and write permission (0600) to connect", uint32(mode))
	}
	return nil
}

// listenMode binds a socket at path whose inode has mode (if not 0) before
// it is bound.
func listenMode(path string, mode os.FileMode) (*net.UnixListener, error) {
	var lc net.ListenConfig
	if mode != 0 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), uint32(mode)) }); cerr != nil {
				return cerr
			}
			if err != nil {
				return fmt.Errorf("set socket mode %#o: %w", uint32(mode), err)
			}
			return nil
		}
	}
	ln, err := lc.Listen(context.Background(), "unixpacket", path)
	if err != nil {
		return nil, err
	}
	return ln.(*net.UnixListener), nil
}

// checkStale returns nil if the file at addr is a socket nothing listens on.
func checkStale(addr *net.UnixAddr) error {
	path := addr.Name
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("listen on %s: in use, and then: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("listen on %s: %w: %s is there, which is left alone", path, ErrNotSocket, describe(fi))
	}
	c, err := net.DialUnix("unixpacket", nil, addr)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w at %s", ErrAlreadyServing, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// Something else is there (another kind of socket, one we may not
		// use): not ours to remove.
		return fmt.Errorf("listen on %s: the socket there is in use: %w", path, err)
	}
	return nil
}

func describe(fi os.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t.IsRegular():
		return "a regular file"
	case t.IsDir():
		return "a directory"
	case t&os.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return "a file of mode " + t.String()
	}
}
