package leasing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/leasekeeper/leasekeeper/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	start   = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	errBoom = errors.New("boom")
)

// testWriter sends hclog output to t.Log, so logs show up with the failing test.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "leasing", Level: hclog.Debug, Output: testWriter{t}})
}

// call is one ProposeExpire seen by fakeProposer. The test answers it on
// reply, after playing the FSM's part (calling Ended or Held) if it wants.
type call struct {
	ctx      context.Context
	term     uint64
	holdings []Holding
	reply    chan error
}

// fakeProposer hands every proposal to the test and blocks until answered.
type fakeProposer struct {
	calls chan *call
	// ignoreCtx makes proposals wait for their reply even when cancelled,
	// like a proposer whose result arrives after the manager gave up on it.
	ignoreCtx atomic.Bool
}

func (f *fakeProposer) ProposeExpire(ctx context.Context, term uint64, hs []Holding) error {
	c := &call{ctx: ctx, term: term, holdings: hs, reply: make(chan error, 1)}
	f.calls <- c // buffered: a test never leaves this many unread
	if f.ignoreCtx.Load() {
		return <-c.reply
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type harness struct {
	t   *testing.T
	clk *clock.Fake
	p   *fakeProposer
	m   *Manager
	reg *prometheus.Registry
}

// newHarness starts a Manager's Run on a fake clock, and stops it (waiting
// for it) when the test ends.
func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{
		t:   t,
		clk: clock.NewFake(start),
		p:   &fakeProposer{calls: make(chan *call, 64)},
		reg: prometheus.NewRegistry(),
	}
	m, err := New(cfg, h.clk, h.p, testLogger(t), h.reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
	return h
}

// quiet reports whether Run is blocked with nothing to do until a wake or a
// timer that the fake clock has not reached yet.
func (m *Manager) quiet() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.idle && (m.armed < 0 || m.armed > m.now())
}

// settle waits until Run has caught up with everything the test did: it
// returns the proposal Run makes, or nil once Run is blocked with nothing
// due. No sleeps: Run pokes idleNote whenever it blocks.
func (h *harness) settle() *call {
	for {
		select {
		case c := <-h.p.calls:
			return c
		default:
		}
		if h.m.quiet() {
			return nil
		}
		select {
		case c := <-h.p.calls:
			return c
		case <-h.m.idleNote:
		}
	}
}

func (h *harness) expectCall() *call {
	h.t.Helper()
	c := h.settle()
	if c == nil {
		h.t.Fatalf("at +%v: no proposal, want one", h.elapsed())
	}
	return c
}

func (h *harness) expectQuiet() {
	h.t.Helper()
	if c := h.settle(); c != nil {
		h.t.Fatalf("at +%v: unexpected proposal of %d holdings (first %+v)", h.elapsed(), len(c.holdings), c.holdings[0])
	}
}

// applyExpire plays the FSM: it applies the Expire (calling Ended for each
// holding, as the FSM does while applying) and then lets the proposal return.
func (h *harness) applyExpire(c *call) {
	for _, hd := range c.holdings {
		h.m.Ended(hd.Key)
	}
	c.reply <- nil
}

// advance moves the fake clock once Run has caught up. Moving it while Run
// is still planning could arm Run's timer from a later now than the one it
// planned with, and the test would then wait for a fire that comes later.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.expectQuiet()
	h.clk.Advance(d)
}

func (h *harness) elapsed() time.Duration { return h.clk.Since(start) }

// testTerm is the leadership term the harness promotes its manager for.
const testTerm = 1

func (h *harness) promote(hs ...Holding) {
	h.m.Promote(testTerm, func() []Holding { return hs })
}

func (h *harness) wantRemaining(k Key, want time.Duration, wantOK bool) {
	h.t.Helper()
	got, ok := h.m.Remaining(k)
	if got != want || ok != wantOK {
		h.t.Fatalf("Remaining(%v) = %v, %v; want %v, %v", k, got, ok, want, wantOK)
	}
}

func (h *harness) wantLen(want int) {
	h.t.Helper()
	if got := h.m.Len(); got != want {
		h.t.Fatalf("Len() = %d, want %d", got, want)
	}
}

func key(name string) Key { return Key{Namespace: "default", Name: name} }

func keyN(i int) Key { return Key{Namespace: "default", Name: fmt.Sprintf("lease-%07d", i)} }

// metric returns the value of a counter, gauge or histogram sample count
// in reg, matching name and, when given, one label value.
func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, label)
	return 0
}
