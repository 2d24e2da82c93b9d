// Package integration runs real lease-node processes on loopback and checks
// the service end to end: contention and fencing tokens, expiry, leader
// failure and recovery.
package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestThreeProcessCluster(t *testing.T) {
	c := startCluster(t, 3)
	c.leader(15 * time.Second)
	cl := c.client()

	// Contention and fencing tokens.
	a, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "db", "A", 10*time.Second, 0, nil)
	if err != nil || !a.Acquired {
		t.Fatalf("acquire by A: %v %+v", err, a)
	}
	t1 := a.Lease.FencingToken
	b, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "db", "B", 10*time.Second, 0, nil)
	if err != nil || b.Acquired || b.Lease.HolderIdentity != "A" {
		t.Fatalf("acquire by B while A holds: %v %+v", err, b)
	}
	if _, err := cl.Release(ctxT(t, 10*time.Second), "default", "db", "A", t1); err != nil {
		t.Fatalf("release by A: %v", err)
	}
	b, err = cl.Acquire(ctxT(t, 10*time.Second), "default", "db", "B", 10*time.Second, 0, nil)
	if err != nil || !b.Acquired || b.Lease.FencingToken <= t1 || b.Lease.LeaseTransitions != a.Lease.LeaseTransitions+1 {
		t.Fatalf("acquire by B after release: %v %+v (t1=%d)", err, b.GetLease(), t1)
	}
	if _, err := cl.Renew(ctxT(t, 10*time.Second), "default", "db", "A", t1); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("renew with A's old token: %v, want ErrStaleToken", err)
	}

	t.Run("expiry", func(t *testing.T) {
		const d, grace = 1 * time.Second, 500 * time.Millisecond
		start := time.Now()
		e, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "short", "A", d, grace, nil)
		if err != nil || !e.Acquired {
			t.Fatalf("acquire: %v", err)
		}
		w, err := cl.Watch(ctxT(t, 10*time.Second), &pb.WatchRequest{Name: "short", StartRevision: e.Lease.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		for {
			ev, err := w.Recv()
			if err != nil {
				t.Fatalf("watching for expiry: %v", err)
			}
			if ev.Type == pb.WatchEvent_EXPIRED {
				break
			}
		}
		took := time.Since(start)
		if took < d+grace || took > d+grace+time.Second {
			t.Fatalf("expired after %v, want within [%v, %v]", took, d+grace, d+grace+time.Second)
		}
		t.Logf("unrenewed lease (%v + %v grace) expired after %v", d, grace, took.Round(time.Millisecond))
		n, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "short", "B", d, 0, nil)
		if err != nil || !n.Acquired || n.Lease.FencingToken <= e.Lease.FencingToken {
			t.Fatalf("acquire after expiry: %v %+v", err, n.GetLease())
		}
	})

	t.Run("leader kill", func(t *testing.T) {
		const d = 4 * time.Second
		sent := time.Now()
		h, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "survivor", "H", d, 0, nil)
		if err != nil || !h.Acquired {
			t.Fatalf("acquire: %v", err)
		}
		old := c.leader(5 * time.Second)
		killed := time.Now()
		c.stop(old, syscall.SIGKILL)

		// Writes succeed again once a new leader is elected.
		var recovered time.Duration
		for {
			_, err := cl.Acquire(ctxT(t, 2*time.Second), "default", "probe", "P", time.Minute, 0, nil)
			if err == nil {
				recovered = time.Since(killed)
				break
			}
			if time.Since(killed) > 5*time.Second {
				t.Fatalf("no write succeeded within 5s of killing the leader: %v", err)
			}
		}
		t.Logf("failover: first write succeeded %v after kill -9 of the leader", recovered.Round(time.Millisecond))

		// The holding survived with its token, and is still held at the
		// holder's own deadline (sent + d, less a margin for clock drift).
		g, err := cl.Get(ctxT(t, 5*time.Second), "default", "survivor", false)
		if err != nil || g.Lease.HolderIdentity != "H" || g.Lease.FencingToken != h.Lease.FencingToken {
			t.Fatalf("after failover: %v %+v", err, g.GetLease())
		}
		holderDeadline := sent.Add(time.Duration(float64(d) * 0.99))
		time.Sleep(time.Until(holderDeadline) - 100*time.Millisecond) // waiting for a point in time, not for an event
		g, err = cl.Get(ctxT(t, 5*time.Second), "default", "survivor", false)
		if err != nil || g.Lease.HolderIdentity != "H" {
			t.Fatalf("holding gone before the holder's deadline: %v %+v", err, g.GetLease())
		}
		renewed, err := cl.Renew(ctxT(t, 5*time.Second), "default", "survivor", "H", h.Lease.FencingToken)
		if err != nil || renewed.FencingToken != h.Lease.FencingToken {
			t.Fatalf("renew after failover: %v", err)
		}

		// The killed node restarts from its data and catches up.
		c.start(old)
		rc := c.client(old.grpc)
		deadline := time.Now().Add(15 * time.Second)
		for {
			g, err := rc.Get(ctxT(t, 2*time.Second), "default", "probe", true)
			if err == nil && g.Lease.HolderIdentity == "P" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("restarted node did not catch up: %v", err)
			}
			time.Sleep(50 * time.Millisecond) // polling another process
		}
	})
}

// TestGarbageOnPorts sends bytes that are neither gRPC nor Raft to every
// port of a node: the node drops those connections and keeps serving.
func TestGarbageOnPorts(t *testing.T) {
	c := startCluster(t, 3)
	c.leader(15 * time.Second)
	junk := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		bytes.Repeat([]byte{0xff}, 4096),
		[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage-frame"),
		{0x00, 0x01, 0x02, 0x03},
	}
	for _, p := range c.procs {
		for _, addr := range []string{p.grpc, p.raft} {
			for _, j := range junk {
				conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					t.Fatalf("dial %s: %v", addr, err)
				}
				_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
				_, _ = conn.Write(j)
				_, _ = io.Copy(io.Discard, conn) // until the node hangs up or the deadline
				conn.Close()
			}
		}
	}
	cl := c.client()
	a, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "after-garbage", "A", 10*time.Second, 0, nil)
	if err != nil || !a.Acquired {
		t.Fatalf("acquire after garbage: %v", err)
	}
	for _, p := range c.procs {
		if p.cmd == nil {
			continue
		}
		select {
		case <-p.done:
			t.Fatalf("node %s exited after garbage on its ports", p.id)
		default:
		}
		g, err := c.client(p.grpc).Get(ctxT(t, 5*time.Second), "default", "after-garbage", false)
		if err != nil || g.Lease.HolderIdentity != "A" {
			t.Fatalf("node %s after garbage: %v", p.id, err)
		}
	}
}
