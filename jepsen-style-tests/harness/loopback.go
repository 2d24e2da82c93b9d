package harness

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loopbackNet is the fallback when network namespaces are not available
// (not root, no iproute2): every node listens on 127.0.0.1, and the
// nodes reach each other's Raft and gRPC ports only through
// fault-injecting TCP proxies, two per node, which each node advertises
// (lease-node --raft-advertise and --grpc-advertise): Raft traffic and
// the calls a follower forwards to the leader both go through them. A
// proxy learns which node opened a connection from the kernel's socket
// table (/proc/net/tcp and the nodes' open files), so it can cut any pair
// of nodes in either direction: a cut connection is closed, and a new one
// from a cut peer is accepted and then black-holed, as a DROP rule would.
// Clients reach the nodes through the gRPC proxies too; a partition never
// cuts them (they are no node), so they keep reaching every node, as in
// netns mode, but a blackhole silences them with the rest of the node's
// traffic.
type loopbackNet struct {
	n       int
	logf    func(string, ...any)
	nodes   []nodeAddrs
	proxies []*proxy
	// pids returns the running nodes' PIDs, mapped to node index.
	pids func() map[int]int

	mu  sync.Mutex
	cut map[[2]int]bool
	// hole is the blackholed node, -1 when none: every connection to or
	// from it is silenced, clients' included.
	hole int
	// The Raft stall in force: reads from node stallFrom are held for
	// stallDelay (none when stallDelay is 0); stallEnd is closed when it
	// ends, which lets go what is held.
	stallFrom  int
	stallDelay time.Duration
	stallEnd   chan struct{}
	stalled    atomic.Int64 // reads held by the stall in force
}

func (m *loopbackNet) mode() Mode { return ModeLoopback }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (m *loopbackNet) setup() error {
	m.cut = map[[2]int]bool{}
	m.hole = -1
	for i := 0; i < m.n; i++ {
		var ports [3]int
		for k := range ports {
			p, err := freePort()
			if err != nil {
				return err
			}
			ports[k] = p
		}
		a := nodeAddrs{
			grpcListen: fmt.Sprintf("127.0.0.1:%d", ports[0]),
			raft:       fmt.Sprintf("127.0.0.1:%d", ports[1]),
			http:       fmt.Sprintf("127.0.0.1:%d", ports[2]),
		}
		var err error
		if a.peer, err = m.proxy(i, a.raft, true); err != nil {
			return err
		}
		if a.grpc, err = m.proxy(i, a.grpcListen, false); err != nil {
			return err
		}
		m.nodes = append(m.nodes, a)
	}
	return nil
}

// proxy starts a proxy in front of node i's target port and returns its
// address. Raft stalls hold only what goes through a raft proxy.
func (m *loopbackNet) proxy(i int, target string, raft bool) (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	p := &proxy{owner: i, lis: lis, target: target, raft: raft, net: m, conns: map[*proxyConn]bool{}}
	m.proxies = append(m.proxies, p)
	go p.serve()
	return lis.Addr().String(), nil
}

func (m *loopbackNet) addrs(i int) nodeAddrs { return m.nodes[i] }

func (m *loopbackNet) command(i int, bin string, args []string) (string, []string) {
	return bin, args
}

func (m *loopbackNet) blocked(from, to int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cut[[2]int{from, to}]
}

// holed reports whether a blackhole silences traffic from node from (-1:
// not a node) to node to.
func (m *loopbackNet) holed(from, to int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hole >= 0 && (m.hole == to || m.hole == from)
}

func (m *loopbackNet) partition(cut [][2]int) error {
	m.mu.Lock()
	m.cut = map[[2]int]bool{}
	for _, p := range cut {
		m.cut[[2]int{p[0], p[1]}] = true
		m.cut[[2]int{p[1], p[0]}] = true
	}
	m.mu.Unlock()
	for _, p := range m.proxies {
		p.enforce()
	}
	return nil
}

func (m *loopbackNet) heal() error { return m.partition(nil) }

func (m *loopbackNet) stall(i int, delay time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stallDelay > 0 {
		return fmt.Errorf("harness: Raft traffic from node %d is already stalled", m.stallFrom+1)
	}
	m.stallFrom, m.stallDelay, m.stallEnd = i, delay, make(chan struct{})
	m.stalled.Store(0)
	return nil
}

func (m *loopbackNet) unstall() (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stallDelay == 0 {
		return 0, nil
	}
	m.stallDelay = 0
	close(m.stallEnd)
	return m.stalled.Load(), nil
}

// stalledFor returns how long to hold a read that node from sent to node
// to's Raft port, and the channel that ends the hold early; 0 when the
// stall does not cover the pair.
func (m *loopbackNet) stalledFor(from, to int) (time.Duration, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stallDelay == 0 || from != m.stallFrom || to == from {
		return 0, nil
	}
	return m.stallDelay, m.stallEnd
}

// blackhole silences every connection through node i's proxies and every
// one that node i opened to the others' proxies, without closing any:
// what is sent is swallowed and nothing comes back, as with packets
// dropped both ways. New connections are accepted and swallowed alike.
func (m *loopbackNet) blackhole(i int) error {
	m.mu.Lock()
	if m.hole >= 0 {
		m.mu.Unlock()
		return fmt.Errorf("harness: node %d is already blackholed", m.hole+1)
	}
	m.hole = i
	m.mu.Unlock()
	for _, p := range m.proxies {
		p.enforce()
	}
	return nil
}

// unblackhole ends the blackhole: the silenced connections, which lost
// what was sent on them, are closed, and their ends dial again.
func (m *loopbackNet) unblackhole() error {
	m.mu.Lock()
	m.hole = -1
	m.mu.Unlock()
	for _, p := range m.proxies {
		p.enforce()
	}
	return nil
}

func (m *loopbackNet) teardown() error {
	_, _ = m.unstall()
	for _, p := range m.proxies {
		p.close()
	}
	return nil
}

// proxy fronts one node's Raft or gRPC port.
type proxy struct {
	owner  int
	lis    net.Listener
	target string
	raft   bool // a Raft port, which stalls hold
	net    *loopbackNet

	mu     sync.Mutex
	conns  map[*proxyConn]bool
	closed bool
	wg     sync.WaitGroup
}

type proxyConn struct {
	from   int // node index of the dialler, -1 when not a node
	client net.Conn
	// blackholed: swallowed from its accept on (a partition or a
	// blackhole in force then); silenced: swallowed from a blackhole that
	// began while it carried traffic. Both are closed when the fault that
	// made them ends.
	blackholed bool
	silenced   atomic.Bool
}

// dead reports whether the connection carries nothing any more.
func (c *proxyConn) dead() bool { return c.blackholed || c.silenced.Load() }

// close cuts the connection: closing the client side ends both copy loops
// in handle, which then closes the server side.
func (c *proxyConn) close() { c.client.Close() }

func (p *proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		from := p.identify(c)
		pc := &proxyConn{from: from, client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[pc] = true
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(pc)
	}
}

func (p *proxy) handle(pc *proxyConn) {
	defer p.wg.Done()
	defer func() {
		pc.close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	p.mu.Lock()
	pc.blackholed = (pc.from >= 0 && p.net.blocked(pc.from, p.owner)) || p.net.holed(pc.from, p.owner)
	p.mu.Unlock()
	if pc.blackholed {
		// Black hole: swallow what the peer sends until the connection is
		// cut on heal or closed by the peer.
		_, _ = io.Copy(io.Discard, pc.client)
		return
	}
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.forward(pc, s); done <- struct{}{} }()
	go func() { p.back(pc, s); done <- struct{}{} }()
	<-done
	pc.client.Close()
	s.Close()
	<-done
}

// forward copies what the dialling node sends on to the node behind the
// proxy. While a Raft stall covers the pair, a read of at least
// stallMinPayload bytes (log entries; a heartbeat is smaller) is passed on
// delay after it arrived, and every read after it waits its turn, as the
// bytes of one TCP connection do.
func (p *proxy) forward(pc *proxyConn, dst net.Conn) {
	type chunk struct {
		b   []byte
		due time.Time
		end <-chan struct{} // closed when the stall ends
	}
	q := make(chan chunk, 1024)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for c := range q {
			if wait := time.Until(c.due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-c.end:
				}
				t.Stop()
			}
			if pc.silenced.Load() {
				continue // swallowed by a blackhole
			}
			if _, err := dst.Write(c.b); err != nil {
				pc.close() // ends the reads below
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.client.Read(buf)
		if n > 0 {
			c := chunk{b: append([]byte(nil), buf[:n]...)}
			if d, end := p.net.stalledFor(pc.from, p.owner); p.raft && d > 0 && n >= stallMinPayload {
				c.due, c.end = time.Now().Add(d), end
				p.net.stalled.Add(1)
			}
			q <- c
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-wrote
}

// back copies the node's answers to the dialler, swallowing them while
// the connection is silenced.
func (p *proxy) back(pc *proxyConn, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pc.silenced.Load() {
			if _, werr := pc.client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// enforce applies the faults in force to the open connections: it closes
// those that a partition cuts, silences (without closing) those that a
// blackhole covers, and closes swallowed ones that no fault covers any
// more (their ends dial again). Closing is done at once, so that nothing
// more passes once partition returns; handle then drops it from conns.
func (p *proxy) enforce() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		cut := pc.from >= 0 && p.net.blocked(pc.from, p.owner)
		hole := p.net.holed(pc.from, p.owner)
		switch {
		case pc.dead() && !cut && !hole:
			pc.close()
		case pc.dead():
		case cut:
			pc.close()
		case hole:
			pc.silenced.Store(true)
		}
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	for pc := range p.conns {
		go pc.close()
	}
	p.mu.Unlock()
	p.lis.Close()
	p.wg.Wait()
}

// identify returns the index of the node that opened c, or -1.
func (p *proxy) identify(c net.Conn) int {
	ra, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok || p.net.pids == nil {
		return -1
	}
	la := c.LocalAddr().(*net.TCPAddr)
	inode := socketInode(ra.Port, la.Port)
	if inode == "" {
		return -1
	}
	target := "socket:[" + inode + "]"
	for pid, idx := range p.net.pids() {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == target {
				return idx
			}
		}
	}
	return -1
}

// socketInode finds the inode of the TCP socket with the given local and
// remote ports in /proc/net/tcp (IPv4 loopback).
func socketInode(localPort, remotePort int) string {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[0] == "sl" {
			continue
		}
		if hexPort(fs[1]) == localPort && hexPort(fs[2]) == remotePort {
			return fs[9]
		}
	}
	return ""
}

func hexPort(addr string) int {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return -1
	}
	v, err := strconv.ParseInt(addr[i+1:], 16, 32)
	if err != nil {
		return -1
	}
	return int(v)
}
