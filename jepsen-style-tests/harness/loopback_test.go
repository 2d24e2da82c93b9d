package harness

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// echoServer answers every connection with what it receives, until the
// test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

// TestProxyBlackhole: a blackhole silences the node's open connections
// without closing them and swallows new ones; its end closes what it
// silenced, and new connections pass again. Clients (no node) are
// covered too.
func TestProxyBlackhole(t *testing.T) {
	m := &loopbackNet{n: 1, cut: map[[2]int]bool{}, hole: -1}
	addr, err := m.proxy(0, echoServer(t), false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.teardown()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// echo sends b on c and returns what came back within wait.
	echo := func(c net.Conn, b string, wait time.Duration) (string, error) {
		t.Helper()
		if _, err := c.Write([]byte(b)); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		got := make([]byte, len(b))
		_, err := io.ReadFull(c, got)
		return string(got), err
	}
	open := dial()
	if got, err := echo(open, "before", 5*time.Second); err != nil || got != "before" {
		t.Fatalf("before the blackhole: %q, %v", got, err)
	}
	if err := m.blackhole(0); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back, and the connection stays open: a read times
	// out instead of ending.
	const silence = 300 * time.Millisecond
	if got, err := echo(open, "during", silence); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("an open connection during the blackhole: %q, %v; want a silent, open connection", got, err)
	}
	fresh := dial()
	if got, err := echo(fresh, "new", silence); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a new connection during the blackhole: %q, %v; want a silent, open connection", got, err)
	}
	if err := m.unblackhole(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"open": open, "fresh": fresh} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 16)); err != io.EOF {
			t.Errorf("the %s connection after the blackhole: %v, want it closed", name, err)
		}
	}
	if got, err := echo(dial(), "after", 5*time.Second); err != nil || got != "after" {
		t.Errorf("after the blackhole: %q, %v", got, err)
	}
}
