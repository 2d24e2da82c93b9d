package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

func TestElectorConfigValidate(t *testing.T) {
	base := func() client.ElectorConfig {
		return client.ElectorConfig{
			Name: "e", Identity: "me",
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			Callbacks: client.LeaderCallbacks{OnStartedLeading: func(context.Context) {}},
		}
	}
	tests := []struct {
		name    string
		change  func(*client.ElectorConfig)
		wantErr string
	}{
		{name: "valid", change: func(*client.ElectorConfig) {}},
		{name: "no name", change: func(c *client.ElectorConfig) { c.Name = "" }, wantErr: "Name"},
		{name: "no identity", change: func(c *client.ElectorConfig) { c.Identity = "" }, wantErr: "Identity"},
		{name: "duration not above deadline", change: func(c *client.ElectorConfig) { c.LeaseDuration = 10 * time.Second }, wantErr: "LeaseDuration"},
		{name: "deadline not above retry", change: func(c *client.ElectorConfig) { c.RetryPeriod = 10 * time.Second }, wantErr: "RenewDeadline"},
		{name: "zero retry", change: func(c *client.ElectorConfig) { c.RetryPeriod = 0 }, wantErr: "RetryPeriod"},
		{name: "renew interval past deadline", change: func(c *client.ElectorConfig) { c.RenewInterval = 11 * time.Second }, wantErr: "RenewInterval"},
		{name: "negative grace", change: func(c *client.ElectorConfig) { c.GracePeriod = -1 }, wantErr: "GracePeriod"},
		{name: "no callback", change: func(c *client.ElectorConfig) { c.Callbacks.OnStartedLeading = nil }, wantErr: "OnStartedLeading"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestProfiles(t *testing.T) {
	tests := []struct {
		name               string
		minDur, maxDur     time.Duration
		fraction           float64
		minRetry, maxRetry time.Duration
		minGrace, maxGrace time.Duration
	}{
		{name: "production", minDur: 30 * time.Second, maxDur: 60 * time.Second, fraction: 1.0 / 4, minRetry: 5 * time.Second, maxRetry: 10 * time.Second, minGrace: 15 * time.Second, maxGrace: 30 * time.Second},
		{name: "test", minDur: 15 * time.Second, maxDur: 30 * time.Second, fraction: 1.0 / 3, minRetry: 2 * time.Second, maxRetry: 5 * time.Second, minGrace: 5 * time.Second, maxGrace: 10 * time.Second},
		{name: "development", minDur: 60 * time.Second, maxDur: 120 * time.Second, fraction: 1.0 / 2, minRetry: 10 * time.Second, maxRetry: 15 * time.Second, minGrace: 30 * time.Second, maxGrace: 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := client.ProfileByName(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			if p.LeaseDuration < tt.minDur || p.LeaseDuration > tt.maxDur || p.RenewFraction != tt.fraction ||
				p.RetryPeriod < tt.minRetry || p.RetryPeriod > tt.maxRetry || p.GracePeriod < tt.minGrace || p.GracePeriod > tt.maxGrace {
				t.Fatalf("profile %+v outside the issue's ranges", p)
			}
			cfg := client.ElectorConfigFromProfile(p)
			cfg.Name, cfg.Identity = "e", "me"
			cfg.Callbacks.OnStartedLeading = func(context.Context) {}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("elector config from %s: %v", tt.name, err)
			}
		})
	}
	if _, err := client.ProfileByName("staging"); err == nil {
		t.Error("ProfileByName(staging) succeeded")
	}
}

// leadership records who leads, checking that terms never overlap.
type leadership struct {
	mu      sync.Mutex
	leader  string
	started chan string
	errs    []string
}

func (l *leadership) callbacks(id string) client.LeaderCallbacks {
	return client.LeaderCallbacks{
		OnStartedLeading: func(ctx context.Context) {
			l.mu.Lock()
			if l.leader != "" {
				l.errs = append(l.errs, fmt.Sprintf("%s started leading while %s leads", id, l.leader))
			}
			l.leader = id
			l.mu.Unlock()
			l.started <- id
			<-ctx.Done()
			l.mu.Lock()
			if l.leader == id {
				l.leader = ""
			}
			l.mu.Unlock()
		},
	}
}

// TestElectorFailover runs 3 candidates, stops the leader abruptly (its
// client closed, or its renewals dropped in the network; no release), and
// checks that another candidate leads within LeaseDuration + RetryPeriod +
// 1s, never two at once.
func TestElectorFailover(t *testing.T) {
	tests := []struct {
		name string
		stop func(c *client.Client, f *faults)
	}{
		{name: "client closed", stop: func(c *client.Client, _ *faults) { c.Close() }},
		{name: "renewals dropped", stop: func(_ *client.Client, f *faults) { f.drop.Store(true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := startCluster(t)
			const (
				leaseDuration = time.Second
				renewDeadline = 700 * time.Millisecond
				retryPeriod   = 200 * time.Millisecond
			)
			l := &leadership{started: make(chan string, 10)}
			type candidate struct {
				c *client.Client
				f *faults
			}
			candidates := map[string]candidate{}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer func() {
				cancel()
				wg.Wait()
			}()
			for i := range 3 {
				id := fmt.Sprintf("candidate-%d", i)
				f := &faults{}
				c := lkClient(t, cl.Endpoints, func(cfg *client.Config) {
					cfg.DialOptions = []grpc.DialOption{f.dialOption()}
					cfg.AbandonOnClose = true // an abrupt stop: no release
				})
				candidates[id] = candidate{c, f}
				le, err := client.NewLeaderElector(c, client.ElectorConfig{
					Name: "failover", Identity: id,
					LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
					Callbacks: l.callbacks(id),
				})
				if err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					// A stopped candidate campaigns no more.
					for ctx.Err() == nil && !f.drop.Load() {
						if err := le.Run(ctx); errors.Is(err, client.ErrClosed) {
							return
						}
					}
				}()
			}
			first := recvWithin(t, l.started, 10*time.Second, "a first leader")
			stopped := time.Now()
			tt.stop(candidates[first].c, candidates[first].f)
			second := recvWithin(t, l.started, leaseDuration+retryPeriod+time.Second, "a new leader")
			if second == first {
				t.Fatalf("%s led again after it was stopped", first)
			}
			t.Logf("%s took over from %s after %v", second, first, time.Since(stopped))
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, e := range l.errs {
				t.Error(e)
			}
		})
	}
}

func TestElectorObserveAndRelease(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	watcher := lkClient(t, cl.Endpoints)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	bumpRevision(t, c)
	e := mustElection(t, watcher, "observed")
	if got, err := e.Leader(ctx); err != nil || got != "" {
		t.Fatalf("Leader before any campaign = %q, %v; want none", got, err)
	}
	obs := e.Observe(ctx)
	if got := recvWithin(t, obs, 5*time.Second, "the first observation"); got != "" {
		t.Fatalf("first observation = %q, want none", got)
	}

	leading := make(chan context.Context, 1)
	newLeaders := make(chan string, 10)
	stopped := make(chan struct{})
	le, err := client.NewLeaderElector(c, client.ElectorConfig{
		Name: "observed", Identity: "alice",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 300 * time.Millisecond,
		ReleaseOnCancel: true,
		Callbacks: client.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { leading <- ctx; <-ctx.Done() },
			OnStoppedLeading: func() { close(stopped) },
			OnNewLeader:      func(id string) { newLeaders <- id },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- le.Run(runCtx) }()

	lctx := recvWithin(t, leading, 5*time.Second, "leadership")
	if !le.IsLeader() {
		t.Error("IsLeader false while leading")
	}
	if got := recvWithin(t, obs, 5*time.Second, "the new leader"); got != "alice" {
		t.Fatalf("observed %q, want alice", got)
	}
	waitUntil(t, 5*time.Second, "the elector to observe itself", func() bool { return le.Leader() == "alice" })
	if got, err := e.Leader(ctx); err != nil || got != "alice" {
		t.Fatalf("Leader = %q, %v; want alice", got, err)
	}

	stop()
	if err := recvWithin(t, done, 5*time.Second, "Run to return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if lctx.Err() == nil {
		t.Fatal("leading context live after Run returned")
	}
	closedWithin(t, stopped, time.Second, "OnStoppedLeading")
	if le.IsLeader() {
		t.Error("IsLeader true after Run returned")
	}
	// ReleaseOnCancel freed the lease at once.
	if got := recvWithin(t, obs, 5*time.Second, "the release"); got != "" {
		t.Fatalf("observed %q after the release, want none", got)
	}
	// The elector reports the leader it finds first ("" unless it won the
	// race with its own observer), then itself.
	got := recvWithin(t, newLeaders, time.Second, "OnNewLeader")
	if got == "" {
		got = recvWithin(t, newLeaders, time.Second, "OnNewLeader")
	}
	if got != "alice" {
		t.Fatalf("OnNewLeader(%q), want alice", got)
	}
}

// TestObserveResumesAfterBreaks breaks the watch after every event: the
// observer resumes from the last revision and misses no change.
func TestObserveResumesAfterBreaks(t *testing.T) {
	cl := startCluster(t)
	f := &faults{}
	f.breakWatch.Store(1)
	watcher := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.DialOptions = []grpc.DialOption{f.dialOption()} })
	c := lkClient(t, cl.Endpoints)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bumpRevision(t, c)
	obs := mustElection(t, watcher, "resumed").Observe(ctx)
	if got := recvWithin(t, obs, 10*time.Second, "the first observation"); got != "" {
		t.Fatalf("first observation %q, want none", got)
	}
	// Each change waits for its observation, so none is coalesced.
	for _, holder := range []string{"a", "", "b", "", "c"} {
		if holder == "" {
			continue
		}
		r, err := c.Acquire(ctx, "default", "resumed", holder, time.Minute, 0, nil)
		if err != nil || !r.Acquired {
			t.Fatalf("Acquire %s: %v %v", holder, r, err)
		}
		if got := recvWithin(t, obs, 10*time.Second, "holder "+holder); got != holder {
			t.Fatalf("observed %q, want %q", got, holder)
		}
		if _, err := c.Release(ctx, "default", "resumed", holder, r.Lease.FencingToken); err != nil {
			t.Fatal(err)
		}
		if got := recvWithin(t, obs, 10*time.Second, "the release of "+holder); got != "" {
			t.Fatalf("observed %q after the release, want none", got)
		}
	}
}

// bumpRevision writes once, so that the store's revision is not 0: a watch
// cannot ask to replay from revision 0, so an observer that starts on a
// store that was never written may miss the very first change (see
// Election.Observe).
func bumpRevision(t *testing.T, c *client.Client) {
	t.Helper()
	if _, err := c.Acquire(context.Background(), "default", "revision-bump", "test", time.Minute, 0, nil); err != nil {
		t.Fatal(err)
	}
}

// lateAnswers delays the answer to the first Acquire of one lease by
// delay, as a slow network would: the server applies it at once, the
// candidate hears of it late.
type lateAnswers struct {
	lease string
	delay time.Duration
	fired atomic.Bool
}

func (l *lateAnswers) dialOption() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if a, ok := req.(*pb.AcquireRequest); ok && a.GetName() == l.lease && l.fired.CompareAndSwap(false, true) {
			select {
			case <-time.After(l.delay):
			case <-ctx.Done():
			}
		}
		return err
	})
}

// TestElectorKeepsCampaigningAfterALateAnswer: an acquire answered after
// the deadline it would have granted (ErrExpired) is a transient error, as
// in client-go; the candidate campaigns on and leads.
func TestElectorKeepsCampaigningAfterALateAnswer(t *testing.T) {
	cl := startCluster(t)
	late := &lateAnswers{lease: "late", delay: 1200 * time.Millisecond}
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) {
		cfg.UnaryCalls = true // the interceptor sees every call
		cfg.DialOptions = []grpc.DialOption{late.dialOption()}
	})
	started := make(chan struct{})
	le, err := client.NewLeaderElector(c, client.ElectorConfig{
		Name: "late", Identity: "slow-candidate",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 300 * time.Millisecond,
		Callbacks: client.LeaderCallbacks{OnStartedLeading: func(ctx context.Context) {
			close(started)
			<-ctx.Done()
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- le.Run(ctx) }()
	select {
	case <-started:
	case err := <-ran:
		t.Fatalf("Run returned %v before leading", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not leading 10s after a late answer")
	}
	if !late.fired.Load() {
		t.Fatal("the first acquire was not answered late: the test tested nothing")
	}
	cancel()
	if err := recvWithin(t, ran, 5*time.Second, "Run to return"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// TestElectionCampaignProclaimResign is etcd's Election cycle: the first
// candidate leads with its value, the second waits in the queue, a
// Proclaim changes the value within the same term, and Resign hands the
// leadership over at once.
func TestElectionCampaignProclaimResign(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	ctx := context.Background()
	alice := mustElection(t, c, "etcd-style", client.WithIdentity("alice"), client.WithTTL(10*time.Second))
	bob := mustElection(t, c, "etcd-style", client.WithIdentity("bob"), client.WithTTL(10*time.Second))
	watcher := mustElection(t, c, "etcd-style")

	h, err := alice.Campaign(ctx, "alice-v1")
	if err != nil {
		t.Fatal(err)
	}
	bobLeads := make(chan error, 1)
	go func() {
		_, err := bob.Campaign(ctx, "bob-v1")
		bobLeads <- err
	}()
	check := func(wantLeader, wantValue string) {
		t.Helper()
		if got, err := watcher.Leader(ctx); err != nil || got != wantLeader {
			t.Fatalf("Leader = %q, %v; want %q", got, err, wantLeader)
		}
		if got, err := watcher.Value(ctx); err != nil || got != wantValue {
			t.Fatalf("Value = %q, %v; want %q", got, err, wantValue)
		}
	}
	check("alice", "alice-v1")
	if err := bob.Proclaim(ctx, "bob-v0"); !errors.Is(err, client.ErrNotLeader) {
		t.Fatalf("Proclaim by a waiting candidate = %v, want ErrNotLeader", err)
	}
	if err := alice.Proclaim(ctx, "alice-v2"); err != nil {
		t.Fatal(err)
	}
	check("alice", "alice-v2")
	if !h.Valid() || alice.Holding().Token() != h.Token() {
		t.Fatal("Proclaim ended or replaced the term")
	}
	if err := alice.Proclaim(ctx, "not a label value!"); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("Proclaim of a bad value = %v, want ErrInvalid", err)
	}
	if err := alice.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recvWithin(t, bobLeads, 5*time.Second, "bob to lead after alice resigned"); err != nil {
		t.Fatal(err)
	}
	check("bob", "bob-v1")
	if bob.Holding().Token() <= h.Token() {
		t.Fatalf("bob's term has token %d, not above alice's %d", bob.Holding().Token(), h.Token())
	}
	if err := alice.Resign(ctx); err != nil {
		t.Fatalf("Resign when not leading = %v, want nil", err)
	}
	if err := bob.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	check("", "")
}
