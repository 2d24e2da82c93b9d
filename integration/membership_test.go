package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// addJoiner starts a new node that joins the cluster through its first
// live member.
func (c *cluster) addJoiner(id string) *proc {
	c.t.Helper()
	ports := freePorts(c.t, 2)
	dir := c.t.TempDir()
	var via []string
	for _, p := range c.procs {
		if p.cmd != nil {
			via = append(via, p.grpc)
		}
	}
	p := &proc{id: id, grpc: ports[0], raft: ports[1], dataDir: filepath.Join(dir, id), logPath: filepath.Join(dir, id+".log")}
	p.args = []string{"--id", id, "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
		"--join", strings.Join(via, ","),
		"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--leader-lease-timeout", "250ms"}
	c.procs = append(c.procs, p)
	c.start(p)
	return p
}

// voters waits until the cluster's configuration has exactly want voters,
// all with registered gRPC addresses, and returns their IDs.
func (c *cluster) voters(want int) []string {
	c.t.Helper()
	cl := c.client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cl.Status(ctx)
		cancel()
		if err == nil && len(st.Members) == want {
			var ids []string
			for _, m := range st.Members {
				if m.GrpcAddr != "" && m.Suffrage == "voter" {
					ids = append(ids, m.Id)
				}
			}
			if len(ids) == want {
				return ids
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster did not reach %d voters: %v %v", want, err, st)
		}
		time.Sleep(100 * time.Millisecond) // polling other processes
	}
}

func (c *cluster) remove(id string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.client().Cluster().RemoveMember(ctx, &pb.RemoveMemberRequest{Id: id}); err != nil {
		c.t.Fatalf("remove %s: %v", id, err)
	}
	for _, p := range c.procs {
		if p.id == id {
			c.stop(p, syscall.SIGTERM)
		}
	}
}

// TestResizeAndReplaceUnderLoad grows the cluster 3→5→3 and replaces a
// killed node while a lease is held and renewed: the holding survives with
// its token and no renewal fails for good.
func TestResizeAndReplaceUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	c.leader(15 * time.Second)
	cl := c.client()
	const d = 3 * time.Second
	a, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "held-lock", "holder", d, 0, nil)
	if err != nil || !a.Acquired {
		t.Fatal(err)
	}
	token := a.Lease.FencingToken

	// The holder renews every d/3, each renewal retried until the holder's
	// own deadline; a renewal that cannot get through by then is a loss.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var renewErr error
	renewals := 0
	renewed := make(chan struct{}, 100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(d)
		tick := time.NewTicker(d / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sent := time.Now()
			rctx, cancel := context.WithDeadline(ctx, deadline)
			l, err := cl.Renew(rctx, "default", "held-lock", "holder", token)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil || l.FencingToken != token {
				renewErr = fmt.Errorf("renewal %d failed: %v", renewals+1, err)
				return
			}
			renewals++
			renewed <- struct{}{}
			deadline = sent.Add(d)
		}
	}()

	c.addJoiner("n4")
	c.addJoiner("n5")
	c.voters(5)
	c.remove("n4")
	c.remove("n5")
	c.voters(3)

	// Replace a dead node: kill a follower, remove it, add a new one. The
	// dead node's seat stays in the configuration for a renewal period first.
	<-renewed
	leader := c.leader(5 * time.Second)
	var victim *proc
	for _, p := range c.procs {
		if p.cmd != nil && p != leader {
			victim = p
			break
		}
	}
	c.stop(victim, syscall.SIGKILL)
	c.remove(victim.id)
	c.voters(2)
	c.addJoiner("n6")
	ids := c.voters(3)
	// Two more renewals through the new configuration.
	for i := 0; i < 2; i++ {
		select {
		case <-renewed:
		case <-time.After(2 * d):
			t.Fatalf("no renewal within %v after the resizes (error: %v)", 2*d, renewErr)
		}
	}

	stop()
	wg.Wait()
	if renewErr != nil {
		t.Fatal(renewErr)
	}
	g, err := cl.Get(ctxT(t, 5*time.Second), "default", "held-lock", false)
	if err != nil || g.Lease.HolderIdentity != "holder" || g.Lease.FencingToken != token {
		t.Fatalf("holding after resizes: %v %+v", err, g.GetLease())
	}
	t.Logf("members now %v; %d renewals, all on time; token %d kept", ids, renewals, token)
}
