package integration

import (
	"context"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// TestSystemdNotify: a node started by a Type=notify unit (with
// $NOTIFY_SOCKET set) sends READY=1 once it serves gRPC, so a call right
// after is answered, and STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", socket)
	c := startCluster(t, 1)
	next := func() string {
		t.Helper()
		if err := sock.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, _, err := sock.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("no notification from lease-node: %v", err)
		}
		return string(buf[:n])
	}
	if got, want := next(), "READY=1\nSTATUS=serving gRPC on "+c.procs[0].grpc; got != want {
		t.Fatalf("first notification %q, want %q", got, want)
	}
	cc, err := grpc.NewClient(c.procs[0].grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("Status right after READY=1: %v", err)
	}
	if err := c.procs[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "STOPPING=1" {
		t.Errorf("notification on SIGTERM %q, want STOPPING=1", got)
	}
}
