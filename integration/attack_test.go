package integration

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

// The floods of the attack suite: each is bounded in count and time, sent
// only to a node this test starts on loopback, and followed by a check
// that the node stayed within a memory bound and kept answering others.

// startProbed starts a one-node cluster with its metrics and Kubernetes
// API on loopback.
func startProbed(t *testing.T, extra ...string) (*cluster, *proc) {
	t.Helper()
	ports := freePorts(t, 4)
	dir := t.TempDir()
	p := &proc{id: "a1", grpc: ports[0], raft: ports[1], http: ports[2], k8s: ports[3],
		dataDir: filepath.Join(dir, "a1"), logPath: filepath.Join(dir, "a1.log")}
	p.args = append([]string{"--id", p.id, "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
		"--http-addr", p.http, "--k8s-api-addr", p.k8s, "--bootstrap", "--peers", "a1=" + p.raft}, extra...)
	c := &cluster{t: t, procs: []*proc{p}}
	c.start(p)
	t.Cleanup(func() { c.stop(p, 9) })
	return c, p
}

// bounded checks, after a flood, that the node's RSS grew by at most
// limit bytes over before and that a Get still answers within a second.
func bounded(t *testing.T, c *cluster, p *proc, before float64, limit float64, what string) {
	t.Helper()
	rss := scrape(t, p)["process_resident_memory_bytes"]
	t.Logf("%s: RSS %.0f MiB -> %.0f MiB", what, before/(1<<20), rss/(1<<20))
	if rss-before > limit {
		t.Errorf("%s: RSS grew by %.0f MiB, want at most %.0f MiB", what, (rss-before)/(1<<20), limit/(1<<20))
	}
	start := time.Now()
	if _, err := c.client().Get(ctxT(t, time.Second), "default", "probe", true); status.Code(err) != codes.NotFound {
		t.Errorf("%s: a Get during the flood: %v, want NotFound within a second", what, err)
	}
	t.Logf("%s: a Get answered in %v", what, time.Since(start).Round(time.Millisecond))
}

// TestAttackFloods: 2000 idle watches, 3000 waiters on one lease and an
// amplifying JSON patch, one after another on one node.
func TestAttackFloods(t *testing.T) {
	c, p := startProbed(t)
	c.leader(15 * time.Second)
	cl := c.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	idle := scrape(t, p)["process_resident_memory_bytes"]

	t.Run("2000 watches", func(t *testing.T) {
		wctx, stop := context.WithCancel(ctx)
		defer stop()
		for i := range 2000 {
			w, err := cl.Leases().Watch(wctx, &pb.WatchRequest{Namespace: "default", Name: fmt.Sprintf("w%d", i)})
			if err != nil {
				t.Fatalf("watch %d: %v", i, err)
			}
			_ = w // held open until stop
		}
		deadline := time.Now().Add(time.Minute)
		for scrape(t, p)["leasekeeper_watches_open"] < 2000 {
			if time.Now().After(deadline) {
				t.Fatalf("the node holds %v watches, want 2000", scrape(t, p)["leasekeeper_watches_open"])
			}
			time.Sleep(100 * time.Millisecond) // polling another process
		}
		bounded(t, c, p, idle, 256<<20, "2000 watches")
	})

	t.Run("3000 waiters", func(t *testing.T) {
		if _, err := cl.Acquire(ctxT(t, 5*time.Second), "default", "q", "holder", time.Hour, 0, nil); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		codesSeen := map[codes.Code]int{}
		sem := make(chan struct{}, 256) // an accepted wait is held for its 2 s
		for i := range 3000 {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err := cl.Leases().Acquire(cctx, &pb.AcquireRequest{Name: "q", HolderIdentity: fmt.Sprintf("w%d", i),
					LeaseDuration: durationpb.New(time.Hour), Wait: true})
				mu.Lock()
				codesSeen[status.Code(err)]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("answers to 3000 waits: %v", codesSeen)
		if codesSeen[codes.ResourceExhausted] < 2000 {
			t.Errorf("%d waits refused, want every one past the 1000th", codesSeen[codes.ResourceExhausted])
		}
		g, err := cl.Get(ctxT(t, 5*time.Second), "default", "q", false)
		if err != nil || len(g.Lease.Waiters) > 1000 {
			t.Fatalf("queue after the flood: %v waiters, %v", len(g.GetLease().GetWaiters()), err)
		}
		bounded(t, c, p, idle, 256<<20, "3000 waiters")
	})

	t.Run("amplifying JSON patch", func(t *testing.T) {
		if _, err := cl.Acquire(ctxT(t, 5*time.Second), "default", "amp", "holder", time.Hour, 0, nil); err != nil {
			t.Fatal(err)
		}
		ops := []string{fmt.Sprintf(`{"op":"add","path":"/metadata/annotations","value":{"pad":%q}}`, strings.Repeat("x", 1000))}
		for i := range 18 {
			ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/metadata/annotations","path":"/metadata/annotations/c%d"}`, i))
		}
		req, err := http.NewRequestWithContext(ctxT(t, 10*time.Second), "PATCH",
			"http://"+p.k8s+"/apis/coordination.k8s.io/v1/namespaces/default/leases/amp", strings.NewReader("["+strings.Join(ops, ",")+"]"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json-patch+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("amplifying patch: %d, want 422", resp.StatusCode)
		}
		bounded(t, c, p, idle, 256<<20, "amplifying patch")
	})
}

// TestAttackUnauthenticatedFlood: 30,000 calls without a token to a node
// with auth on are all refused, cost the node no lasting memory, and do
// not slow an authenticated caller.
func TestAttackUnauthenticatedFlood(t *testing.T) {
	pki, token, flags := tokenNode(t)
	_, p := startProbed(t, flags...)
	tlsCfg, _, err := tlsutil.ClientConfig("", "", filepath.Join(pki, "ca.crt"), "")
	if err != nil {
		t.Fatal(err)
	}
	dial := func(opts ...grpc.DialOption) pb.LeasesClient {
		cc, err := grpc.NewClient(p.grpc, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return pb.NewLeasesClient(cc)
	}
	carol, stranger := dial(grpc.WithPerRPCCredentials(auth.BearerToken{Token: token})), dial()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := carol.Get(ctxT(t, 2*time.Second), &pb.GetRequest{Name: "probe", Serializable: true})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node does not answer carol: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // the node is starting: polling another process
	}
	before := scrape(t, p)["process_resident_memory_bytes"]
	const calls, workers = 30000, 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[codes.Code]int{}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls / workers {
				_, err := stranger.Get(ctxT(t, 5*time.Second), &pb.GetRequest{Name: "probe"})
				mu.Lock()
				seen[status.Code(err)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if seen[codes.Unauthenticated] != calls {
		t.Fatalf("answers to %d calls without a token: %v, want every one Unauthenticated", calls, seen)
	}
	rss := scrape(t, p)["process_resident_memory_bytes"]
	t.Logf("%d refused calls: RSS %.0f MiB -> %.0f MiB", calls, before/(1<<20), rss/(1<<20))
	if rss > 2*before {
		t.Errorf("RSS %.0f MiB after the flood, want at most twice the %.0f MiB before", rss/(1<<20), before/(1<<20))
	}
	start := time.Now()
	if _, err := carol.Get(ctxT(t, time.Second), &pb.GetRequest{Name: "probe", Serializable: true}); status.Code(err) != codes.NotFound {
		t.Fatalf("carol after the flood: %v", err)
	}
	t.Logf("carol's Get answered in %v", time.Since(start).Round(time.Millisecond))
}
