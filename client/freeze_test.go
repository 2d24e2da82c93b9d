package client_test

import (
	"net"
	"sync"
	"testing"
)

// freezer is a loopback TCP proxy in front of one node that can stop
// passing bytes, both ways, while every connection stays open: what a
// client sees of a node stopped by SIGSTOP. The node itself goes on
// working with the others.
type freezer struct {
	Addr   string
	target string
	lis    net.Listener

	mu     sync.Mutex
	thawed chan struct{} // closed while bytes pass
	conns  []net.Conn
	closed chan struct{}
	wg     sync.WaitGroup
}

// freezeProxy starts a proxy to target, closed when t ends.
func freezeProxy(t *testing.T, target string) *freezer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{Addr: lis.Addr().String(), target: target, lis: lis, thawed: make(chan struct{}), closed: make(chan struct{})}
	close(f.thawed)
	f.wg.Go(f.accept)
	t.Cleanup(f.close)
	return f
}

// freezeProxies puts a proxy in front of every endpoint and returns them
// with their addresses, in the same order.
func freezeProxies(t *testing.T, endpoints []string) ([]*freezer, []string) {
	t.Helper()
	var fs []*freezer
	var addrs []string
	for _, ep := range endpoints {
		f := freezeProxy(t, ep)
		fs = append(fs, f)
		addrs = append(addrs, f.Addr)
	}
	return fs, addrs
}

// Freeze stops every byte, on open connections and new ones.
func (f *freezer) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
		f.thawed = make(chan struct{})
	default:
	}
}

// Thaw lets the bytes held back and new ones pass again.
func (f *freezer) Thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
	default:
		close(f.thawed)
	}
}

// pass waits while the proxy is frozen; false once it is closed.
func (f *freezer) pass() bool {
	f.mu.Lock()
	thawed := f.thawed
	f.mu.Unlock()
	select {
	case <-thawed:
		return true
	case <-f.closed:
		return false
	}
}

func (f *freezer) accept() {
	for {
		c, err := f.lis.Accept()
		if err != nil {
			return
		}
		if !f.pass() {
			c.Close()
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		select {
		case <-f.closed:
			f.mu.Unlock()
			c.Close()
			up.Close()
			return
		default:
		}
		f.conns = append(f.conns, c, up)
		f.mu.Unlock()
		f.wg.Go(func() { f.copy(up, c) })
		f.wg.Go(func() { f.copy(c, up) })
	}
}

// copy passes bytes from src to dst, holding each read back while frozen.
// When either side ends, the connection ends both ways.
func (f *freezer) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !f.pass() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) close() {
	f.mu.Lock()
	close(f.closed)
	conns := f.conns
	f.mu.Unlock()
	f.lis.Close()
	for _, c := range conns {
		c.Close()
	}
	f.wg.Wait()
}
