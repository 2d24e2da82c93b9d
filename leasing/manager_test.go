package leasing

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasekeeper/leasekeeper/clock"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // a substring naming the field; "" for valid
	}{
		{"default", func(*Config) {}, ""},
		{"rate cap", func(c *Config) { c.MaxExpiryRate = 100 }, ""},
		{"zero batch", func(c *Config) { c.ExpiryBatchSize = 0 }, "ExpiryBatchSize must be > 0"},
		{"negative batch", func(c *Config) { c.ExpiryBatchSize = -1 }, "ExpiryBatchSize"},
		{"negative rate", func(c *Config) { c.MaxExpiryRate = -1 }, "MaxExpiryRate"},
		{"NaN rate", func(c *Config) { c.MaxExpiryRate = math.NaN() }, "MaxExpiryRate"},
		{"infinite rate", func(c *Config) { c.MaxExpiryRate = math.Inf(1) }, "MaxExpiryRate"},
		{"zero retry", func(c *Config) { c.RetryInterval = 0 }, "RetryInterval must be > 0"},
		{"zero timeout", func(c *Config) { c.ProposeTimeout = 0 }, "ProposeTimeout must be > 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "leasing: "):
				t.Fatalf("Validate() = %q, want the package prefix", err)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	want := Config{ExpiryBatchSize: 5000, RetryInterval: 250 * time.Millisecond, ProposeTimeout: 5 * time.Second}
	if got := DefaultConfig(); got != want {
		t.Fatalf("DefaultConfig() = %+v, want %+v", got, want)
	}
}

func TestNew(t *testing.T) {
	clk := clock.NewFake(start)
	p := &fakeProposer{}
	bad := DefaultConfig()
	bad.RetryInterval = 0
	tests := []struct {
		name    string
		cfg     Config
		clk     clock.Clock
		p       Proposer
		reg     prometheus.Registerer
		wantErr string
	}{
		{"ok", DefaultConfig(), clk, p, prometheus.NewRegistry(), ""},
		{"nil registerer", DefaultConfig(), clk, p, nil, ""},
		{"bad config", bad, clk, p, nil, "RetryInterval"},
		{"nil clock", DefaultConfig(), nil, p, nil, "clock"},
		{"nil proposer", DefaultConfig(), clk, nil, nil, "Proposer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.cfg, tt.clk, tt.p, nil, tt.reg)
			if tt.wantErr == "" {
				if err != nil || m == nil {
					t.Fatalf("New() = %v, %v; want a manager", m, err)
				}
				if m.Active() || m.Len() != 0 {
					t.Fatalf("new manager: Active() = %v, Len() = %d; want demoted and empty", m.Active(), m.Len())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}

	t.Run("registers metrics once", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := New(DefaultConfig(), clk, p, nil, reg); err != nil {
			t.Fatalf("first New: %v", err)
		}
		for _, name := range []string{
			"leasekeeper_lease_expiries_proposed_total",
			"leasekeeper_lease_expiry_lateness_seconds",
			"leasekeeper_deadline_table_size",
			"leasekeeper_expiry_proposals_total",
		} {
			metric(t, reg, name, "")
		}
		if _, err := New(DefaultConfig(), clk, p, nil, reg); err == nil {
			t.Fatal("second New on the same registry: nil error, want a duplicate registration error")
		}
	})
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.expectQuiet() // the first Run has started
	if err := h.m.Run(context.Background()); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run() = %v, want ErrAlreadyRunning", err)
	}
}

// TestDeadlines drives one manager through Held, Ended and time, checking
// after every step whether Run proposed, and what.
func TestDeadlines(t *testing.T) {
	a := Holding{Key: key("a"), Token: 7, RenewIndex: 42, TTL: 10 * time.Second}
	aRenewed := Holding{Key: key("a"), Token: 7, RenewIndex: 50, TTL: 10 * time.Second}
	aShort := Holding{Key: key("a"), Token: 7, RenewIndex: 51, TTL: 2 * time.Second}
	b := Holding{Key: key("b"), Token: 9, RenewIndex: 43, TTL: 10 * time.Second}
	c := Holding{Key: key("c"), Token: 11, RenewIndex: 44, TTL: 3 * time.Second}

	type step struct {
		advance time.Duration
		held    *Holding
		ended   *Key
		want    []Holding // the proposal this step causes, applied by the test; nil for none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"expires only after the deadline passes", []step{
			{held: &a},
			{advance: 10*time.Second - time.Nanosecond},
			{advance: time.Nanosecond}, // now == deadline: not yet past it
			{advance: time.Nanosecond, want: []Holding{a}},
		}},
		{"renewal pushes the deadline", []step{
			{held: &a},
			{advance: 6 * time.Second},
			{held: &aRenewed},
			{advance: 4*time.Second + time.Nanosecond}, // a's first deadline
			{advance: 6*time.Second - time.Nanosecond},
			{advance: time.Nanosecond, want: []Holding{aRenewed}},
		}},
		{"shorter renewal moves the earliest deadline earlier", []step{
			{held: &a},
			{advance: time.Second},
			{held: &aShort}, // Run's timer is armed for 10s: it must re-arm
			{advance: 2 * time.Second},
			{advance: time.Nanosecond, want: []Holding{aShort}},
		}},
		{"ended removes", []step{
			{held: &a},
			{advance: 5 * time.Second},
			{ended: &a.Key},
			{advance: time.Hour},
		}},
		{"held again after ended", []step{
			{held: &a},
			{ended: &a.Key},
			{advance: 5 * time.Second},
			{held: &a},
			{advance: 10 * time.Second},
			{advance: time.Nanosecond, want: []Holding{a}},
		}},
		{"earliest first, and together when both are due", []step{
			{held: &a},
			{held: &c},
			{advance: 3*time.Second + time.Nanosecond, want: []Holding{c}},
			{held: &b},
			{advance: 12 * time.Second, want: []Holding{a, b}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			h.promote()
			h.expectQuiet()
			for i, s := range tt.steps {
				h.advance(s.advance)
				if s.held != nil {
					h.m.Held(*s.held)
				}
				if s.ended != nil {
					h.m.Ended(*s.ended)
				}
				if s.want == nil {
					if c := h.settle(); c != nil {
						t.Fatalf("step %d at +%v: proposal %+v, want none", i, h.elapsed(), c.holdings)
					}
					continue
				}
				c := h.expectCall()
				if !reflect.DeepEqual(c.holdings, s.want) {
					t.Fatalf("step %d at +%v: proposal %+v, want %+v", i, h.elapsed(), c.holdings, s.want)
				}
				h.applyExpire(c)
			}
			h.expectQuiet()
			if n := h.clk.Timers(); n > 1 {
				t.Fatalf("Timers() = %d: Run leaves at most one armed while idle", n)
			}
		})
	}
}

func TestExpiryMetrics(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	h.promote(Holding{Key: key("a"), Token: 1, TTL: time.Second}, Holding{Key: key("b"), Token: 2, TTL: 2 * time.Second})
	h.expectQuiet()
	if got := metric(t, h.reg, "leasekeeper_deadline_table_size", ""); got != 2 {
		t.Fatalf("table size = %v, want 2", got)
	}
	h.advance(3 * time.Second)
	h.applyExpire(h.expectCall())
	h.expectQuiet()
	for _, tt := range []struct {
		name, label string
		want        float64
	}{
		{"leasekeeper_lease_expiries_proposed_total", "", 2},
		{"leasekeeper_lease_expiry_lateness_seconds", "", 2},
		{"leasekeeper_deadline_table_size", "", 0},
		{"leasekeeper_expiry_proposals_total", "ok", 1},
		{"leasekeeper_expiry_proposals_total", "error", 0},
	} {
		if got := metric(t, h.reg, tt.name, tt.label); got != tt.want {
			t.Errorf("%s{%s} = %v, want %v", tt.name, tt.label, got, tt.want)
		}
	}
}

func TestNotPromoted(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := Holding{Key: key("a"), Token: 1, TTL: time.Second}
	h.m.Held(a)
	h.wantLen(1) // tracked, without a deadline
	h.wantRemaining(a.Key, 0, false)
	if h.m.Active() {
		t.Fatal("Active() = true before Promote")
	}
	h.advance(time.Hour)
	h.expectQuiet()
	if n := h.clk.Timers(); n != 0 {
		t.Fatalf("Timers() = %d while demoted, want 0", n)
	}
}

// TestPromoteTracked checks that a demoted manager keeps the holdings that
// Held and Ended report, so that Promote(nil) starts from them with fresh
// deadlines, and that Track replaces them.
func TestPromoteTracked(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := Holding{Key: key("a"), Token: 1, RenewIndex: 1, TTL: time.Second}
	aRenewed := Holding{Key: key("a"), Token: 1, RenewIndex: 5, TTL: 3 * time.Second}
	b := Holding{Key: key("b"), Token: 2, RenewIndex: 2, TTL: time.Second}
	c := Holding{Key: key("c"), Token: 3, RenewIndex: 3, TTL: 2 * time.Second}
	h.m.Held(a)
	h.m.Held(b)
	h.m.Held(c)
	h.m.Ended(b.Key)
	h.m.Held(aRenewed)
	h.advance(time.Hour) // deadlines are not kept while demoted
	h.m.Promote(testTerm, nil)
	h.wantLen(2)
	h.wantRemaining(a.Key, 3*time.Second, true)
	h.wantRemaining(b.Key, 0, false)
	h.wantRemaining(c.Key, 2*time.Second, true)
	h.advance(2*time.Second + time.Nanosecond)
	call := h.expectCall()
	if !reflect.DeepEqual(call.holdings, []Holding{c}) {
		t.Fatalf("first proposal %+v, want %+v", call.holdings, []Holding{c})
	}
	h.applyExpire(call)
	h.m.Demote()
	h.wantLen(1)
	// A snapshot installed on a follower replaces what it tracked.
	h.m.Track(func() []Holding { return []Holding{b} })
	h.wantLen(1)
	h.m.Promote(testTerm, nil)
	h.wantRemaining(a.Key, 0, false)
	h.wantRemaining(b.Key, time.Second, true)
	// On a leader, Track is a promotion with the new holdings.
	h.m.Track(func() []Holding { return []Holding{a, c} })
	h.wantLen(2)
	h.wantRemaining(b.Key, 0, false)
	h.wantRemaining(a.Key, time.Second, true)
	// An Expire proposed before that Track may still reach the log in
	// this term, and its result is ignored: the first renewal of each
	// holding goes through the log.
	if h.m.Extend(a) {
		t.Fatal("Extend after a mid-term Track = true, want false")
	}
}

func TestDemoteStopsProposals(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := Holding{Key: key("a"), Token: 1, TTL: 5 * time.Second}
	h.promote(a)
	h.expectQuiet()
	h.m.Demote()
	if h.m.Active() {
		t.Fatal("Active() = true after Demote")
	}
	h.wantLen(1) // still tracked
	h.wantRemaining(a.Key, 0, false)
	h.m.Held(a) // tracked, no deadline
	h.wantLen(1)
	h.advance(time.Hour)
	h.expectQuiet()
}

// TestInFlightAfterDemote checks that a proposal's result after Demote
// changes nothing, whether it comes back ok or failed, and whether or not the
// node was promoted again meanwhile.
func TestInFlightAfterDemote(t *testing.T) {
	for _, tt := range []struct {
		name      string
		result    error
		repromote bool
	}{
		{"ok", nil, false},
		{"failed", errBoom, false},
		{"ok after re-promote", nil, true},
		{"failed after re-promote", errBoom, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			h.p.ignoreCtx.Store(true) // the result arrives after Demote
			a := Holding{Key: key("a"), Token: 1, RenewIndex: 10, TTL: time.Second}
			h.promote(a)
			h.advance(time.Second + time.Nanosecond)
			c := h.expectCall()
			h.m.Demote()
			if c.ctx.Err() == nil {
				t.Fatal("Demote did not cancel the proposal in flight")
			}
			// The holding stays tracked: only an applied Expire ends it.
			wantLen, wantRem := 1, time.Duration(0)
			if tt.repromote {
				h.promote(a)
				wantRem = time.Second
			}
			c.reply <- tt.result
			h.expectQuiet()
			h.wantLen(wantLen)
			h.wantRemaining(a.Key, wantRem, tt.repromote)
			// No retry from the abandoned proposal.
			h.advance(h.m.cfg.RetryInterval + time.Nanosecond)
			h.expectQuiet()
			if tt.repromote {
				// The fresh term expires it on its own deadline.
				h.advance(time.Second)
				h.applyExpire(h.expectCall())
			}
			h.expectQuiet()
		})
	}
}

func TestPromoteGivesFreshTTL(t *testing.T) {
	for _, tt := range []struct {
		name   string
		demote bool // Promote again with or without a Demote in between
	}{
		{"after demote", true},
		{"while promoted", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			a := Holding{Key: key("a"), Token: 3, RenewIndex: 5, TTL: 10 * time.Second}
			h.promote()
			h.m.Held(a) // deadline +10s in the first term
			h.advance(8 * time.Second)
			if tt.demote {
				h.m.Demote()
			}
			h.promote(a) // at +8s: a full 10s again, to +18s
			h.wantRemaining(a.Key, 10*time.Second, true)
			h.expectQuiet()
			h.advance(10 * time.Second) // past the old deadline, at the new one
			h.expectQuiet()
			h.advance(time.Nanosecond)
			c := h.expectCall()
			if !reflect.DeepEqual(c.holdings, []Holding{a}) {
				t.Fatalf("proposal %+v, want %+v", c.holdings, []Holding{a})
			}
			h.applyExpire(c)
			h.expectQuiet()
		})
	}
}

// TestPromoteOrdersConcurrentEvents checks that Held and Ended that arrive
// while load runs are applied after it, so they win over what load returned.
func TestPromoteOrdersConcurrentEvents(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	old := Holding{Key: key("a"), Token: 1, RenewIndex: 10, TTL: time.Second}
	renewed := Holding{Key: key("a"), Token: 1, RenewIndex: 11, TTL: 3 * time.Second}
	gone := Holding{Key: key("b"), Token: 2, RenewIndex: 12, TTL: time.Second}
	done := make(chan struct{}, 2)
	h.m.Promote(testTerm, func() []Holding {
		go func() { h.m.Held(renewed); done <- struct{}{} }()
		go func() { h.m.Ended(gone.Key); done <- struct{}{} }()
		return []Holding{old, gone}
	})
	<-done
	<-done
	h.wantLen(1)
	h.wantRemaining(old.Key, 3*time.Second, true)
	h.wantRemaining(gone.Key, 0, false)
	h.advance(3*time.Second + time.Nanosecond)
	c := h.expectCall()
	if !reflect.DeepEqual(c.holdings, []Holding{renewed}) {
		t.Fatalf("proposal %+v, want %+v", c.holdings, []Holding{renewed})
	}
	h.applyExpire(c)
	h.expectQuiet()
}

func TestFailedProposalRetried(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	retry := h.m.cfg.RetryInterval
	a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
	h.promote(a)
	h.advance(time.Second + time.Nanosecond)
	c := h.expectCall()
	h.wantRemaining(a.Key, 0, true) // being proposed
	c.reply <- errBoom
	h.expectQuiet()
	h.wantLen(1)
	h.wantRemaining(a.Key, retry, true)
	h.advance(retry)
	h.expectQuiet()
	h.advance(time.Nanosecond)
	c = h.expectCall()
	if !reflect.DeepEqual(c.holdings, []Holding{a}) {
		t.Fatalf("retry proposed %+v, want %+v", c.holdings, []Holding{a})
	}
	h.applyExpire(c)
	h.expectQuiet()
	h.wantLen(0)
	if got := metric(t, h.reg, "leasekeeper_expiry_proposals_total", "error"); got != 1 {
		t.Fatalf("failed proposals = %v, want 1", got)
	}
}

func TestProposeTimeout(t *testing.T) {
	cfg := DefaultConfig()
	h := newHarness(t, cfg)
	a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
	h.promote(a)
	h.advance(time.Second + time.Nanosecond)
	c := h.expectCall()
	<-h.clk.WaitForTimers(1, c.ctx.Done())              // the timeout's timer
	h.clk.Advance(cfg.ProposeTimeout - time.Nanosecond) // Run is in the proposal: no settling
	if err := c.ctx.Err(); err != nil {
		t.Fatalf("proposal cancelled before ProposeTimeout: %v", err)
	}
	h.clk.Advance(time.Nanosecond)
	<-c.ctx.Done()
	h.expectQuiet()
	h.wantRemaining(a.Key, cfg.RetryInterval, true)
	h.advance(cfg.RetryInterval + time.Nanosecond)
	h.applyExpire(h.expectCall())
	h.expectQuiet()
}

// TestEventsDuringProposal plays the FSM's events racing one proposal.
func TestEventsDuringProposal(t *testing.T) {
	a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
	aRenewed := Holding{Key: key("a"), Token: 4, RenewIndex: 9, TTL: 2 * time.Second}
	aNew := Holding{Key: key("a"), Token: 5, RenewIndex: 10, TTL: 2 * time.Second}
	tests := []struct {
		name   string
		during func(m *Manager) // what the FSM applies while the Expire is in flight
		result error
		want   *Holding // what remains in the table, expiring after its TTL from now
	}{
		{"held during failed proposal wins", func(m *Manager) { m.Held(aRenewed) }, errBoom, &aRenewed},
		{"held during ok proposal (stale, rejected) keeps it", func(m *Manager) { m.Held(aRenewed) }, nil, &aRenewed},
		{"ended during failed proposal", func(m *Manager) { m.Ended(a.Key) }, errBoom, nil},
		{"ended and held anew during failed proposal", func(m *Manager) { m.Ended(a.Key); m.Held(aNew) }, errBoom, &aNew},
		{"ok without events (stale) is dropped", func(*Manager) {}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			h.promote(a)
			h.advance(time.Second + time.Nanosecond)
			c := h.expectCall()
			tt.during(h.m)
			c.reply <- tt.result
			h.expectQuiet()
			if tt.want == nil {
				h.wantLen(0)
				h.advance(time.Hour) // nothing lingers or spins
				h.expectQuiet()
				return
			}
			h.wantLen(1)
			h.wantRemaining(a.Key, tt.want.TTL, true)
			h.advance(h.m.cfg.RetryInterval + time.Nanosecond)
			h.expectQuiet()
			h.advance(tt.want.TTL - h.m.cfg.RetryInterval)
			c = h.expectCall()
			if !reflect.DeepEqual(c.holdings, []Holding{*tt.want}) {
				t.Fatalf("proposal %+v, want %+v", c.holdings, []Holding{*tt.want})
			}
			h.applyExpire(c)
			h.expectQuiet()
		})
	}
}

func TestBatching(t *testing.T) {
	for _, tt := range []struct {
		name  string
		n     int
		batch int
		want  []int
	}{
		{"12000 by 5000", 12000, 5000, []int{5000, 5000, 2000}},
		{"exact batch", 5000, 5000, []int{5000}},
		{"one by one", 3, 1, []int{1, 1, 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ExpiryBatchSize = tt.batch
			h := newHarness(t, cfg)
			hs := make([]Holding, tt.n)
			for i := range hs {
				// Spread over 1ms so that batches come out in deadline order.
				hs[i] = Holding{Key: keyN(i), Token: uint64(i + 1), RenewIndex: uint64(i + 1), TTL: time.Second + time.Duration(i)*time.Millisecond/time.Duration(tt.n)}
			}
			h.promote(hs...)
			h.expectQuiet()
			h.advance(2 * time.Second)
			var got []int
			var proposed []Holding
			for c := h.settle(); c != nil; c = h.settle() {
				got = append(got, len(c.holdings))
				proposed = append(proposed, c.holdings...)
				h.applyExpire(c)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("proposal sizes %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(proposed, hs) {
				t.Fatal("proposed holdings differ from the loaded ones or are out of deadline order")
			}
			h.wantLen(0)
			if got := metric(t, h.reg, "leasekeeper_lease_expiries_proposed_total", ""); got != float64(tt.n) {
				t.Fatalf("expiries proposed = %v, want %d", got, tt.n)
			}
		})
	}
}

// TestRateCap steps fake time by 1ms and checks that the expiries proposed
// by every moment stay within the token bucket (burst + rate*elapsed), that
// proposals are batched, and that the backlog still drains on time.
func TestRateCap(t *testing.T) {
	for _, tt := range []struct {
		name  string
		rate  float64
		batch int
		n     int
		burst int // the bucket: rate/10, at least 1
	}{
		{"1000/s", 1000, 5000, 250, 100},
		{"batch below burst", 1000, 30, 250, 100},
		{"5/s", 5, 5000, 12, 1},
		{"fast", 1e6, 5000, 12000, 100000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxExpiryRate = tt.rate
			cfg.ExpiryBatchSize = tt.batch
			h := newHarness(t, cfg)
			hs := make([]Holding, tt.n)
			for i := range hs {
				hs[i] = Holding{Key: keyN(i), Token: uint64(i + 1), TTL: time.Second}
			}
			h.promote(hs...)
			h.expectQuiet()
			h.advance(time.Second + time.Nanosecond)
			first := h.elapsed()
			maxBatch := min(tt.batch, tt.burst)
			// Bucket full at the start, then one batch per maxBatch/rate.
			finish := time.Duration(math.Ceil(float64(max(0, tt.n-tt.burst))/tt.rate*1e3)) * time.Millisecond
			total := 0
			for step := 0; total < tt.n; step++ {
				for c := h.settle(); c != nil; c = h.settle() {
					if len(c.holdings) > maxBatch {
						t.Fatalf("at +%v: batch of %d, want at most %d", h.elapsed(), len(c.holdings), maxBatch)
					}
					total += len(c.holdings)
					h.applyExpire(c)
				}
				since := h.elapsed() - first
				if limit := float64(tt.burst) + tt.rate*since.Seconds(); float64(total) > limit+1e-6 {
					t.Fatalf("%v after the first due: %d expired, cap allows %.0f", since, total, limit)
				}
				if total < tt.n {
					if since > finish {
						t.Fatalf("%v after the first due: %d of %d expired, want all by %v", since, total, tt.n, finish)
					}
					h.advance(time.Millisecond)
				}
			}
			h.expectQuiet()
		})
	}

	t.Run("exact schedule", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxExpiryRate = 1000 // bucket of 100
		h := newHarness(t, cfg)
		hs := make([]Holding, 250)
		for i := range hs {
			hs[i] = Holding{Key: keyN(i), Token: uint64(i + 1), TTL: time.Second}
		}
		h.promote(hs...)
		h.advance(time.Second + time.Nanosecond)
		for _, s := range []struct {
			advance time.Duration
			want    int // proposal size, 0 for none
		}{
			{0, 100},
			{99 * time.Millisecond, 0},
			{time.Millisecond, 100},
			{49 * time.Millisecond, 0},
			{time.Millisecond, 50},
		} {
			if s.advance > 0 {
				h.advance(s.advance)
			}
			c := h.settle()
			switch {
			case s.want == 0 && c != nil:
				t.Fatalf("at +%v: proposal of %d, want none", h.elapsed(), len(c.holdings))
			case s.want != 0 && (c == nil || len(c.holdings) != s.want):
				t.Fatalf("at +%v: proposal %v, want one of %d", h.elapsed(), c, s.want)
			case c != nil:
				h.applyExpire(c)
			}
		}
		h.expectQuiet()
		h.wantLen(0)
	})
}

func TestRemaining(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := Holding{Key: key("a"), Token: 1, RenewIndex: 1, TTL: 10 * time.Second}
	huge := Holding{Key: key("huge"), Token: 2, RenewIndex: 2, TTL: time.Duration(math.MaxInt64)}
	steps := []struct {
		name   string
		do     func()
		k      Key
		want   time.Duration
		wantOK bool
	}{
		{"not promoted", func() { h.m.Held(a) }, a.Key, 0, false},
		{"promoted, not held", func() { h.promote() }, a.Key, 0, false},
		{"just held", func() { h.m.Held(a) }, a.Key, 10 * time.Second, true},
		{"time passes", func() { h.advance(3 * time.Second) }, a.Key, 7 * time.Second, true},
		{"renewed", func() { h.m.Held(a) }, a.Key, 10 * time.Second, true},
		{"at the deadline", func() { h.advance(10 * time.Second) }, a.Key, 0, true},
		{"huge TTL does not overflow", func() { h.m.Held(huge) }, huge.Key, never - 13*time.Second, true},
		{"ended", func() { h.m.Ended(a.Key) }, a.Key, 0, false},
		{"demoted", func() { h.m.Demote() }, huge.Key, 0, false},
	}
	for _, s := range steps {
		s.do()
		h.expectQuiet()
		got, ok := h.m.Remaining(s.k)
		if got != s.want || ok != s.wantOK {
			t.Fatalf("%s: Remaining(%v) = %v, %v; want %v, %v", s.name, s.k, got, ok, s.want, s.wantOK)
		}
	}
}

// TestRandomAgainstModel runs random Held, Ended and clock steps against a
// plain map of deadlines: every proposal must hold exactly due holdings as
// last held, and once Run is quiet nothing may be overdue.
func TestRandomAgainstModel(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run("", func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			cfg := DefaultConfig()
			cfg.ExpiryBatchSize = 7
			h := newHarness(t, cfg)
			h.promote()
			type held struct {
				h        Holding
				deadline time.Duration
			}
			model := map[Key]held{}
			var index uint64
			for op := 0; op < 1500; op++ {
				k := keyN(rng.IntN(60))
				switch r := rng.IntN(10); {
				case r < 5:
					index++
					hd := Holding{Key: k, Token: index, RenewIndex: index, TTL: time.Duration(1+rng.IntN(3000)) * time.Millisecond}
					h.m.Held(hd)
					model[k] = held{hd, h.elapsed() + hd.TTL}
				case r < 7:
					h.m.Ended(k)
					delete(model, k)
				default:
					h.advance(time.Duration(rng.IntN(700)) * time.Millisecond)
				}
				for c := h.settle(); c != nil; c = h.settle() {
					if len(c.holdings) > cfg.ExpiryBatchSize {
						t.Fatalf("op %d: batch of %d", op, len(c.holdings))
					}
					for _, hd := range c.holdings {
						want, ok := model[hd.Key]
						if !ok || want.h != hd || want.deadline >= h.elapsed() {
							t.Fatalf("op %d at +%v: proposed %+v; model has %+v (present %v)", op, h.elapsed(), hd, want, ok)
						}
						delete(model, hd.Key)
					}
					h.applyExpire(c)
				}
				for k, want := range model {
					if want.deadline < h.elapsed() {
						t.Fatalf("op %d at +%v: %v overdue since +%v, not proposed", op, h.elapsed(), k, want.deadline)
					}
				}
				want, present := model[k]
				if rem, ok := h.m.Remaining(k); ok != present || (ok && rem != want.deadline-h.elapsed()) {
					t.Fatalf("op %d: Remaining(%v) = %v, %v; model %+v (present %v)", op, k, rem, ok, want, present)
				}
				h.wantLen(len(model))
			}
		})
	}
}

func TestExtend(t *testing.T) {
	a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
	h := newHarness(t, DefaultConfig())
	if h.m.Extend(a) {
		t.Fatal("Extend before Promote = true, want false")
	}
	h.promote(a)
	h.advance(900 * time.Millisecond)
	// Only the very holding the table has may be extended.
	for _, other := range []Holding{
		{Key: key("b"), Token: 4, RenewIndex: 8, TTL: time.Second},
		{Key: key("a"), Token: 5, RenewIndex: 8, TTL: time.Second},
		{Key: key("a"), Token: 4, RenewIndex: 9, TTL: time.Second},
		{Key: key("a"), Token: 4, RenewIndex: 8, TTL: 2 * time.Second},
	} {
		if h.m.Extend(other) {
			t.Fatalf("Extend(%+v) = true with %+v in the table", other, a)
		}
	}
	h.wantRemaining(a.Key, 100*time.Millisecond, true)
	if !h.m.Extend(a) {
		t.Fatal("Extend = false, want true")
	}
	h.wantRemaining(a.Key, time.Second, true)
	// The old deadline passes without a proposal; the new one brings it.
	h.advance(500 * time.Millisecond)
	h.expectQuiet()
	h.advance(500*time.Millisecond + time.Nanosecond)
	c := h.expectCall()
	// While its Expire is in flight the holding cannot be extended: only a
	// renewal through the log can win against the proposal.
	if h.m.Extend(a) {
		t.Fatal("Extend during the Expire proposal = true, want false")
	}
	h.applyExpire(c)
	h.expectQuiet()
	h.wantLen(0)
	if h.m.Extend(a) {
		t.Fatal("Extend after the expiry = true, want false")
	}
	h.m.Demote()
	if h.m.Extend(a) {
		t.Fatal("Extend after Demote = true, want false")
	}
}

// TestExtendAfterUnresolvedProposal: an Expire whose proposal failed or
// timed out may still be in the Raft log and commit later, so until a
// logged renewal moves the holding on, no renewal of that holding may be
// acknowledged without the log (docs/design.md, "Entries whose proposer
// gave up").
func TestExtendAfterUnresolvedProposal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(h *harness, c *call)
	}{
		{"failed", func(_ *harness, c *call) { c.reply <- errBoom }},
		{"timed out", func(h *harness, c *call) {
			<-h.clk.WaitForTimers(1, c.ctx.Done())
			h.clk.Advance(h.m.cfg.ProposeTimeout)
			<-c.ctx.Done()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
			h.promote(a)
			h.advance(time.Second + time.Nanosecond)
			tc.answer(h, h.expectCall())
			h.expectQuiet()
			if h.m.Extend(a) {
				t.Fatal("Extend after an unresolved Expire = true, want false: that Expire may still commit")
			}
			if got := metric(t, h.reg, "leasekeeper_renewals_in_doubt_total", ""); got != 1 {
				t.Fatalf("renewals in doubt = %v, want 1", got)
			}
			// A queue change leaves the holding as it was: still in doubt.
			h.m.Held(Holding{Key: a.Key, Token: a.Token, RenewIndex: a.RenewIndex, TTL: time.Second})
			if h.m.Extend(a) {
				t.Fatal("Extend after an event with the same renewal = true, want false")
			}
			// A renewal through the log moves the renew index, which makes
			// the pending Expire a no-op: local renewals may resume.
			renewed := Holding{Key: a.Key, Token: a.Token, RenewIndex: 20, TTL: time.Second}
			h.m.Held(renewed)
			if !h.m.Extend(renewed) {
				t.Fatal("Extend after a logged renewal = false, want true")
			}
		})
	}
}

// TestPromoteClearsDoubt: a new term's Barrier settles every entry of the
// terms before it, so an Expire given up on in an earlier term can no
// longer take effect, and local renewals resume.
func TestPromoteClearsDoubt(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
	h.promote(a)
	h.advance(time.Second + time.Nanosecond)
	c := h.expectCall()
	if c.term != testTerm {
		t.Fatalf("Expire proposed for term %d, want the promoted term %d", c.term, testTerm)
	}
	c.reply <- errBoom
	h.expectQuiet()
	if h.m.Extend(a) {
		t.Fatal("Extend after a failed Expire = true, want false")
	}
	h.m.Demote()
	h.m.Promote(testTerm+1, nil)
	if !h.m.Extend(a) {
		t.Fatal("Extend in a new term = false, want true")
	}
	h.advance(time.Second + time.Nanosecond)
	if c := h.expectCall(); c.term != testTerm+1 {
		t.Fatalf("Expire proposed for term %d, want the new term %d", c.term, testTerm+1)
	}
}

// TestUnsafeIgnoreDoubt: the negative control's switch really breaks the
// rule. With it, a holding whose Expire was given up on renews without the
// log, and that Expire, should it commit, ends the renewed holding.
func TestUnsafeIgnoreDoubt(t *testing.T) {
	cfg := DefaultConfig()
	cfg.UnsafeIgnoreDoubt = true
	h := newHarness(t, cfg)
	a := Holding{Key: key("a"), Token: 4, RenewIndex: 8, TTL: time.Second}
	h.promote(a)
	h.advance(time.Second + time.Nanosecond)
	h.expectCall().reply <- errBoom
	h.expectQuiet()
	if !h.m.Extend(a) {
		t.Fatal("Extend with UnsafeIgnoreDoubt after a failed Expire = false, want true")
	}
	if got := metric(t, h.reg, "leasekeeper_renewals_in_doubt_total", ""); got != 1 {
		t.Fatalf("renewals in doubt = %v, want 1 (counted even when ignored)", got)
	}
	h.wantRemaining(a.Key, time.Second, true)
}
