package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// scrape reads one node's /metrics into name{labels} → value.
func scrape(t *testing.T, p *proc) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.http + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", p.id, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func TestMetricsMoveWithTheWorkload(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader(15 * time.Second)
	before := scrape(t, leader)
	cl := c.client()

	const n = 10
	for i := 0; i < n; i++ {
		a, err := cl.Acquire(ctxT(t, 10*time.Second), "metrics", fmt.Sprintf("l%d", i), "h", 300*time.Millisecond, 0, nil)
		if err != nil || !a.Acquired {
			t.Fatal(err)
		}
	}
	// 5 good renewals and 2 stale ones, on a lease that will not expire.
	keep, err := cl.Acquire(ctxT(t, 10*time.Second), "metrics", "keep", "h", time.Minute, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := cl.Renew(ctxT(t, 5*time.Second), "metrics", "keep", "h", keep.Lease.FencingToken); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := cl.Renew(ctxT(t, 5*time.Second), "metrics", "keep", "h", keep.Lease.FencingToken+100); err == nil {
			t.Fatal("stale renewal accepted")
		}
	}
	// Wait for the 10 expiries through a watch.
	w, err := cl.Watch(ctxT(t, 20*time.Second), &pb.WatchRequest{Namespace: "metrics"})
	if err != nil {
		t.Fatal(err)
	}
	for expired := 0; expired < n; {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("watching expiries: %v (saw %d)", err, expired)
		}
		if ev.Type == pb.WatchEvent_EXPIRED {
			expired++
		}
	}
	// The watch may run on a follower; let the leader's counter settle.
	deadline := time.Now().Add(5 * time.Second)
	var after map[string]float64
	for {
		after = scrape(t, leader)
		if after["leasekeeper_lease_expiries_total"]-before["leasekeeper_lease_expiries_total"] >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling another process
	}
	delta := func(k string) float64 { return after[k] - before[k] }
	tests := []struct {
		metric string
		want   float64
	}{
		{"leasekeeper_lease_expiries_total", n},
		{"leasekeeper_lease_expiries_proposed_total", n},
		{"leasekeeper_lease_holder_transitions_total", n + 1},
		{`leasekeeper_lease_renewals_total{result="ok"}`, 5},
		{`leasekeeper_lease_renewals_total{result="not_holder"}`, 2},
		{`leasekeeper_grpc_requests_total{code="OK",method="Acquire"}`, n + 1},
		{`leasekeeper_grpc_requests_total{code="FailedPrecondition",method="Renew"}`, 2},
		{`leasekeeper_lease_acquires_total{result="acquired"}`, n + 1},
		{"leasekeeper_lease_renewal_duration_seconds_count", 7},
	}
	for _, tc := range tests {
		if got := delta(tc.metric); got != tc.want {
			t.Errorf("%s moved by %v, want %v", tc.metric, got, tc.want)
		}
	}
	for _, k := range []string{`leasekeeper_raft_state{state="leader"}`, `leasekeeper_leases{state="held"}`, "leasekeeper_deadline_table_size",
		`leasekeeper_waiters{queue="lease"}`, `leasekeeper_waiters{queue="semaphore"}`} {
		if _, ok := after[k]; !ok {
			t.Errorf("metric %s missing", k)
		}
	}
	if after[`leasekeeper_leases{state="held"}`] != 1 || after["leasekeeper_deadline_table_size"] != 1 {
		t.Errorf("held %v, deadline table %v; want 1 and 1", after[`leasekeeper_leases{state="held"}`], after["leasekeeper_deadline_table_size"])
	}
}

// TestDeployFilesNameRealMetrics checks that every metric the alert rules
// and the dashboard use is one a node exports, so a rename cannot silently
// blind them.
func TestDeployFilesNameRealMetrics(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader(15 * time.Second)
	// One expiry, so that every histogram has a sample.
	if _, err := c.client().Acquire(ctxT(t, 10*time.Second), "default", "x", "h", 50*time.Millisecond, 0, nil); err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for !exported["leasekeeper_lease_expiry_lateness_seconds"] && time.Now().Before(deadline) {
		for k := range scrape(t, leader) {
			name := k
			if i := strings.IndexByte(k, '{'); i >= 0 {
				name = k[:i]
			}
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				name = strings.TrimSuffix(name, suffix)
			}
			exported[name] = true
		}
		time.Sleep(50 * time.Millisecond) // polling another process
	}
	re := regexp.MustCompile(`leasekeeper_[a-z_]+`)
	for _, f := range []string{"../deploy/prometheus/alerts.yml", "../deploy/grafana/leasekeeper.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".json") && !json.Valid(data) {
			t.Errorf("%s is not valid JSON", f)
		}
		for _, m := range re.FindAllString(string(data), -1) {
			base := m
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if !exported[base] {
				t.Errorf("%s uses %s, which no node exports", f, m)
			}
		}
	}
}
