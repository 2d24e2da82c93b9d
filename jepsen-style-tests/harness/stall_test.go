package harness

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// TestProxyStall: while node 0's Raft traffic is stalled, the proxy in
// front of node 1 passes a heartbeat-sized read at once and holds a read
// that carries entries for the delay, with what follows it behind it;
// ending the stall lets go what is held.
func TestProxyStall(t *testing.T) {
	m := &loopbackNet{n: 2}
	p := &proxy{owner: 1, raft: true, net: m}
	clientEnd, proxyEnd := net.Pipe()
	serverEnd, nodeEnd := net.Pipe()
	pc := &proxyConn{from: 0, client: proxyEnd}
	done := make(chan struct{})
	go func() { p.forward(pc, serverEnd); close(done) }()
	defer func() {
		clientEnd.Close()
		nodeEnd.Close()
		<-done
	}()
	const delay = 300 * time.Millisecond
	if err := m.stall(0, delay); err != nil {
		t.Fatal(err)
	}
	heartbeat := bytes.Repeat([]byte{'h'}, stallMinPayload-60)
	entries := bytes.Repeat([]byte{'e'}, stallMinPayload+40)
	small := []byte("tail")

	recv := func(want []byte) time.Duration {
		t.Helper()
		start := time.Now()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(nodeEnd, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %q, want %q", got[:min(len(got), 8)], want[:min(len(want), 8)])
		}
		return time.Since(start)
	}
	send := func(b []byte) {
		go func() { _, _ = clientEnd.Write(b) }()
	}

	send(heartbeat)
	if d := recv(heartbeat); d > delay/2 {
		t.Errorf("a heartbeat took %v during the stall", d)
	}
	start := time.Now()
	send(entries)
	time.Sleep(20 * time.Millisecond) // the reads stay in order
	send(small)
	recv(entries)
	recv(small)
	if d := time.Since(start); d < delay {
		t.Errorf("entries and the read behind them took %v, want at least %v", d, delay)
	}
	if n, _ := m.stalledFor(1, 0); n != 0 {
		t.Error("the stall covers traffic from another node")
	}

	send(entries)
	time.Sleep(20 * time.Millisecond)
	start = time.Now()
	held, err := m.unstall()
	if err != nil || held != 2 {
		t.Fatalf("unstall = %d, %v; want 2 reads held", held, err)
	}
	recv(entries)
	if d := time.Since(start); d > delay/2 {
		t.Errorf("held entries took %v after the stall ended", d)
	}
	send(entries)
	if d := recv(entries); d > delay/2 {
		t.Errorf("entries took %v after the stall ended", d)
	}
}

// TestGRPCProxyIgnoresStall: a stall delays Raft entries only; the calls
// a follower forwards through the leader's gRPC proxy pass on time.
func TestGRPCProxyIgnoresStall(t *testing.T) {
	m := &loopbackNet{n: 2}
	p := &proxy{owner: 1, raft: false, net: m}
	clientEnd, proxyEnd := net.Pipe()
	serverEnd, nodeEnd := net.Pipe()
	done := make(chan struct{})
	go func() { p.forward(&proxyConn{from: 0, client: proxyEnd}, serverEnd); close(done) }()
	defer func() {
		clientEnd.Close()
		nodeEnd.Close()
		<-done
	}()
	const delay = time.Second
	if err := m.stall(0, delay); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = m.unstall() }()
	big := bytes.Repeat([]byte{'g'}, stallMinPayload+40)
	start := time.Now()
	go func() { _, _ = clientEnd.Write(big) }()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(nodeEnd, got); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > delay/2 {
		t.Errorf("a forwarded call took %v through the gRPC proxy during a Raft stall", d)
	}
	if n := m.stalled.Load(); n != 0 {
		t.Errorf("the gRPC proxy counted %d reads as stalled", n)
	}
}

func TestPacketID(t *testing.T) {
	var attrs []byte
	attrs = append(attrs, nlAttr(9, []byte{1, 2, 3})...) // padded to 8
	hdr := binary.BigEndian.AppendUint32(nil, 0xdeadbeef)
	hdr = append(hdr, 0x08, 0x00, 3)
	attrs = append(attrs, nlAttr(nfqaPacketHdr|0x4000, hdr)...)
	id, ok := packetID(attrs)
	if !ok || id != 0xdeadbeef {
		t.Fatalf("packetID = %#x, %v; want 0xdeadbeef", id, ok)
	}
	if _, ok := packetID(attrs[:6]); ok {
		t.Fatal("packetID found an id in a cut attribute")
	}
}
