package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen opens a unixgram socket as a service manager does.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

func TestSendToPathAndAbstractSockets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	abstract := fmt.Sprintf("@leasekeeper-sdnotify-test-%d", os.Getpid())
	for _, socket := range []string{path, abstract} {
		t.Run(socket, func(t *testing.T) {
			c := listen(t, socket)
			state := Ready + "\n" + Status("serving gRPC on 127.0.0.1:7001")
			sent, err := Send(socket, state)
			if !sent || err != nil {
				t.Fatalf("Send: %v, %v", sent, err)
			}
			if got := receive(t, c); got != state {
				t.Errorf("received %q, want %q", got, state)
			}
		})
	}
}

func TestNotifyReadsTheEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	if sent, err := Notify(Stopping); !sent || err != nil {
		t.Fatalf("Notify: %v, %v", sent, err)
	}
	if got := receive(t, c); got != Stopping {
		t.Errorf("received %q, want %q", got, Stopping)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Errorf("Notify without a socket: %v, %v; want nothing sent and no error", sent, err)
	}
}

func TestSendErrors(t *testing.T) {
	tests := []struct {
		name, socket, state, want string
	}{
		{"relative path", "notify", Ready, "neither a path"},
		{"no listener", filepath.Join(t.TempDir(), "absent"), Ready, "no such file"},
		{"empty state", "/run/notify", "", "empty state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sent, err := Send(tc.socket, tc.state)
			if sent || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Send: %v, %v; want an error containing %q", sent, err, tc.want)
			}
		})
	}
}

func TestStatusIsOneLine(t *testing.T) {
	if got := Status("a\nb"); got != "STATUS=a b" {
		t.Errorf("Status = %q", got)
	}
}
