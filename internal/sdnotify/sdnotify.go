// Package sdnotify tells systemd (or any service manager that speaks the
// sd_notify protocol) how a service is doing: one datagram of
// newline-separated KEY=VALUE assignments to the unix socket named by
// $NOTIFY_SOCKET. A unit with Type=notify counts as started only once the
// service sends READY=1.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Messages of the protocol that lease-node sends.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Status is a STATUS= line, which systemctl status shows.
func Status(s string) string { return "STATUS=" + strings.ReplaceAll(s, "\n", " ") }

// sendTimeout bounds one send: the manager reads its socket at once, and a
// service must not hang on a manager that does not.
const sendTimeout = time.Second

// Notify sends state to the socket named by $NOTIFY_SOCKET. Without one
// (not started by a service manager, or a unit of another Type) it does
// nothing and reports false.
func Notify(state string) (bool, error) {
	return Send(os.Getenv("NOTIFY_SOCKET"), state)
}

// Send sends state to socket: a path, or an abstract socket name that
// starts with '@'. An empty socket sends nothing and reports false.
func Send(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return false, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q is neither a path nor an abstract socket", socket)
	}
	if state == "" {
		return false, errors.New("sdnotify: empty state")
	}
	// Go maps a leading '@' to the abstract namespace, as systemd means it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}
