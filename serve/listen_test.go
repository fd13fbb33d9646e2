package serve_test

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kflex-go/kflex/serve"
	"github.com/kflex-go/kflex/userspace"
)

// TestListenStale: a socket file nothing listens on (left by a listener
// closed without unlinking, as a killed runtime leaves it) is replaced, with
// one line naming it.
func TestListenStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	old, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	require.NoError(t, err)
	old.SetUnlinkOnClose(false)
	require.NoError(t, old.Close())
	_, err = os.Stat(path)
	require.NoError(t, err, "the stale socket file is there")

	var log bytes.Buffer
	ln, err := serve.Listen(path, serve.ListenOptions{Logger: textLog(&log)})
	require.NoError(t, err)
	defer ln.Close()
	assert.Equal(t, "level=WARN msg=\"replaced a stale socket: no runtime answered on it\" socket="+path+"\n", log.String())
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	require.NoError(t, err, "the new socket accepts")
	c.Close()
}

// TestListenLive: a path a runtime serves on is refused, and that runtime
// goes on serving.
func TestListenLive(t *testing.T) {
	f := start(t)
	var log bytes.Buffer
	_, err := serve.Listen(f.socket, serve.ListenOptions{Logger: textLog(&log)})
	assert.ErrorIs(t, err, serve.ErrAlreadyServing)
	assert.EqualError(t, err, "a kflex runtime is already serving at "+f.socket)
	assert.Empty(t, log.String())
	c, err := userspace.Dial(f.socket, nil)
	require.NoError(t, err)
	defer c.Close()
	r0, err := c.Invoke("add1", 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), r0)
}

// TestListenNotSocket: a file that is not a socket is refused and kept.
func TestListenNotSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notes")
	require.NoError(t, os.WriteFile(file, []byte("keep me"), 0o600))
	for path, what := range map[string]string{file: "a regular file", dir: "a directory"} {
		_, err := serve.Listen(path, serve.ListenOptions{})
		assert.ErrorIs(t, err, serve.ErrNotSocket)
		assert.EqualError(t, err, "listen on "+path+": not a socket: "+what+" is there, which is left alone")
	}
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
}
