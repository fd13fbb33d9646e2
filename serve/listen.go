package serve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// ErrAlreadyServing: another kflex runtime answers at the socket path.
// ErrNotSocket: the path is some other file, which Listen leaves alone.
var (
	ErrAlreadyServing = errors.New("a kflex runtime is already serving")
	ErrNotSocket      = errors.New("not a socket")
)

// Listen listens for attached processes at the unix socket path. A socket
// file left at path by a runtime that could not remove it (it was killed)
// is stale: nothing accepts on it, so connecting is refused. Listen then
// replaces it, saying so on log (if not nil). A socket something answers on, or a file
// that is not a socket, is refused: the error names path.
//
// Two runtimes starting at once on one stale path can both find it stale;
// the later replaces the earlier's socket. Listen does not guard against
// that race.
func Listen(path string, log io.Writer) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unixpacket"}
	ln, err := net.ListenUnix("unixpacket", addr)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, wrapListen(path, err)
	}
	if err := checkStale(addr); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "kflex runtime: replaced stale socket %s (no runtime answered on it)\n", path)
	ln, err = net.ListenUnix("unixpacket", addr)
	return ln, wrapListen(path, err)
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

func wrapListen(path string, err error) error {
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
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
