package integration

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestCollectorRunsOnADefaultNode: a node started with no tuning flags
// collects garbage under steady traffic, keeps GOGC in the range tuneGC
// may set, and its memory stays within twice its idle size over 50,000
// renewals.
func TestCollectorRunsOnADefaultNode(t *testing.T) {
	ports := freePorts(t, 3)
	dir := t.TempDir()
	p := &proc{id: "g1", grpc: ports[0], raft: ports[1], http: ports[2],
		dataDir: filepath.Join(dir, "g1"), logPath: filepath.Join(dir, "g1.log")}
	p.args = []string{"--id", p.id, "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
		"--http-addr", p.http, "--bootstrap", "--peers", "g1=" + p.raft}
	c := &cluster{t: t, procs: []*proc{p}}
	c.start(p)
	t.Cleanup(func() { c.stop(p, 9) })
	c.leader(15 * time.Second)
	cl := c.client()

	a, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "gc", "h", time.Hour, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	idle := scrape(t, p)["process_resident_memory_bytes"]
	// The profiler (heap and goroutine dumps) is off unless asked for.
	if resp, err := http.Get("http://" + p.http + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ on a node without --enable-pprof: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	const renewals, workers = 50000, 8
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < renewals/workers; i++ {
				if _, err := cl.Renew(ctx, "default", "gc", "h", a.Lease.FencingToken); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("renew: %v", err)
	}
	m := scrape(t, p)
	rss, cycles, gogc := m["process_resident_memory_bytes"], m["go_gc_duration_seconds_count"], m["go_gc_gogc_percent"]
	t.Logf("idle RSS %.1f MiB, after %d renewals %.1f MiB; %v collections; GOGC %v", idle/(1<<20), renewals, rss/(1<<20), cycles, gogc)
	if cycles < 1 {
		t.Errorf("no collection in %d renewals", renewals)
	}
	if gogc <= 0 || gogc > 10000 {
		t.Errorf("GOGC %v, want within (0, 10000]", gogc)
	}
	if rss > 2*idle {
		t.Errorf("RSS %.1f MiB after %d renewals, want at most twice the idle %.1f MiB", rss/(1<<20), renewals, idle/(1<<20))
	}
}
