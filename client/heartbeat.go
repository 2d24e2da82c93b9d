package client

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
)

// DefaultHeartbeatNamespace is the namespace that node heartbeats use when
// none is given, like Kubernetes' kube-node-lease.
const DefaultHeartbeatNamespace = "node-lease"

// Heartbeat keeps the lease namespace/nodeName held by nodeName, so that a
// Monitor (or leasectl get nodes) can tell whether the node is alive. The
// holder identity is the node's name: two processes heartbeating for the
// same node share one holding.
type Heartbeat struct {
	c         *Client
	namespace string
	node      string
	o         options

	mu sync.Mutex
	h  *Holding
}

// NewHeartbeat returns a heartbeat for nodeName in namespace (""
// means DefaultHeartbeatNamespace). WithTTL, WithGrace, WithRenewInterval,
// WithRetryPeriod, WithLabels, WithProfile and WithRecordedRenewals (which
// a Heartbeat always uses) apply; the namespace and identity are the
// arguments.
//
// NewHeartbeat makes no call to the cluster. It checks the namespace, the
// node name (a lease name and a holder identity), the options and the
// timings, and refuses WithNamespace, WithIdentity and WithLockDelay (a
// node's liveness fences no work, and a delay would only keep the node
// from taking its own lease again), with an error matching ErrInvalid.
func NewHeartbeat(c *Client, namespace, nodeName string, opts ...Option) (*Heartbeat, error) {
	if namespace == "" {
		namespace = DefaultHeartbeatNamespace
	}
	o := buildOptions(opts)
	if err := o.refuse("NewHeartbeat", heartbeatOptions, "the namespace and the node name are arguments, and a heartbeat takes no lock delay"); err != nil {
		return nil, err
	}
	if nodeName == "" {
		return nil, invalidf("NewHeartbeat: the node name is empty")
	}
	if err := validateNamespace(namespace); err != nil {
		return nil, invalidf("NewHeartbeat: %v", err)
	}
	// nodeName is the lease's name (checked by checkHolding) and the
	// holder identity: a valid lease name is a valid identity.
	o.namespace = namespace
	o.identity = nodeName
	// A Monitor tells a live member by the renewals it sees.
	o.record = true
	o.retrying = true
	if err := c.checkHolding("NewHeartbeat", nodeName, o); err != nil {
		return nil, err
	}
	return &Heartbeat{c: c, namespace: namespace, node: nodeName, o: o}, nil
}

// heartbeatOptions are the options that NewHeartbeat takes.
const heartbeatOptions = optTTL | optGrace | optRenewInterval | optRetryPeriod | optLabels | optProfile | optRecordedRenewals

// Run keeps the lease held until ctx is done, then releases it, so monitors
// see the node leave at once. A lost holding is taken again at once; a
// failed attempt is retried after the retry period. Run returns nil when ctx
// ends, or an error that a retry cannot help (ErrInvalid, ErrPermission,
// ErrClosed).
func (hb *Heartbeat) Run(ctx context.Context) error {
	// unknown: the last acquire failed without an answer, so it may have
	// been granted; the next one adopts it, and giving up cleans it up.
	unknown := false
	for {
		h, err := hb.c.hold(ctx, hb.node, hb.o)
		switch {
		case err == nil:
			unknown = false
			hb.set(h)
			select {
			case <-h.Done():
				hb.c.log.Debug("heartbeat lost, taking it again", "node", hb.node, "error", h.Err())
				hb.set(nil)
				continue
			case <-ctx.Done():
				hb.set(nil)
				// Wait for the release (bounded), so that Run's return
				// means the monitors can see the node gone.
				rctx, cancel := hb.c.releaseContext(ctx)
				_ = h.Release(rctx)
				cancel()
				return nil
			}
		case ctx.Err() != nil:
			return nil // hold cleans up after the acquire it gave up
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrPermission), errors.Is(err, ErrClosed):
			return err
		}
		unknown = outcomeUnknown(ctx, err)
		t := hb.c.clock.NewTimer(hb.o.retryPeriod)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			if unknown {
				hb.c.abandonAcquire(ctx, holdingKey{namespace: hb.namespace, name: hb.node, holder: hb.node})
			}
			return nil
		}
	}
}

func (hb *Heartbeat) set(h *Holding) {
	hb.mu.Lock()
	hb.h = h
	hb.mu.Unlock()
}

// Holding returns the current holding, or nil between holdings.
func (hb *Heartbeat) Holding() *Holding {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return hb.h
}

// MemberState classifies a heartbeat.
type MemberState int

// Member states.
const (
	// StateUnknown: the lease is free, expired, deleted, or silent for
	// longer than duration plus grace.
	StateUnknown MemberState = iota
	// StateReady: the last heartbeat was observed within the duration.
	StateReady
	// StateNotReady: past the duration but within the grace period.
	StateNotReady
)

func (s MemberState) String() string {
	switch s {
	case StateReady:
		return "Ready"
	case StateNotReady:
		return "NotReady"
	}
	return "Unknown"
}

// Member is one node of a heartbeat namespace as a Monitor sees it.
type Member struct {
	// Name is the lease's (the node's) name.
	Name string
	// Holder is the holder identity, "" when the lease is free.
	Holder string
	// State is the classification at the time the Member was made.
	State MemberState
	// LastHeartbeat is when the last acquire or renewal was observed, on
	// the observer's clock (zero when never). A heartbeat that predates the
	// observer is placed by the leader's remaining time, never by comparing
	// wall clocks.
	LastHeartbeat time.Time
	// Duration and Grace are the lease's.
	Duration time.Duration
	Grace    time.Duration
	// Lease is the last state of the lease that the observer saw.
	Lease *pb.Lease
}

// MemberEvent is a change of a member's state.
type MemberEvent struct {
	Member Member
	// From is the state before; a member seen for the first time comes
	// from StateUnknown.
	From MemberState
	// Deleted is set when the lease was deleted; the member is gone.
	Deleted bool
}

func classify(holder string, last time.Time, dur, grace time.Duration, now time.Time) MemberState {
	if holder == "" || last.IsZero() {
		return StateUnknown
	}
	since := now.Sub(last)
	switch {
	case since <= dur:
		return StateReady
	case since <= dur+grace:
		return StateNotReady
	}
	return StateUnknown
}

// nextChange returns when the classification of a held lease next changes,
// false when it never will without an event.
func nextChange(holder string, last time.Time, dur, grace time.Duration, now time.Time) (time.Time, bool) {
	if holder == "" || last.IsZero() {
		return time.Time{}, false
	}
	for _, b := range []time.Duration{dur, dur + grace} {
		if t := last.Add(b + 1); t.After(now) {
			return t, true
		}
	}
	return time.Time{}, false
}

// member is a Monitor's record of one lease.
type member struct {
	lease    *pb.Lease
	last     time.Time // observed acquire or renewal; zero if none
	reported MemberState
	seen     bool // reported at least once
	deleted  bool
}

func (m *member) snapshot(now time.Time) Member {
	l := m.lease
	return Member{
		Name:          l.GetName(),
		Holder:        l.GetHolderIdentity(),
		State:         classify(l.GetHolderIdentity(), m.last, l.GetLeaseDuration().AsDuration(), l.GetGracePeriod().AsDuration(), now),
		LastHeartbeat: m.last,
		Duration:      l.GetLeaseDuration().AsDuration(),
		Grace:         l.GetGracePeriod().AsDuration(),
		Lease:         l,
	}
}

// ListMembers reads every lease of a heartbeat namespace ("" means
// DefaultHeartbeatNamespace) once and classifies it, placing each last
// heartbeat by the leader's remaining time on the client's clock.
func ListMembers(ctx context.Context, c *Client, namespace string) ([]Member, error) {
	if namespace == "" {
		namespace = DefaultHeartbeatNamespace
	}
	ms, _, err := readMembers(ctx, c, namespace, c.clock)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now()
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.snapshot(now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// readMembers lists namespace and, for each held lease, asks the leader for
// its remaining time: remaining = duration + grace - (time since its last
// renewal), so that last renewal is placed at now - (duration + grace -
// remaining) on clk. A lease whose remaining time is unknown is placed at
// now. It returns the store revision of the list.
func readMembers(ctx context.Context, c *Client, namespace string, clk clock.Clock) (map[string]*member, uint64, error) {
	resp, err := c.List(ctx, &pb.ListRequest{Namespace: namespace})
	if err != nil {
		return nil, 0, err
	}
	ms := make(map[string]*member, len(resp.GetLeases()))
	for _, l := range resp.GetLeases() {
		m := &member{lease: l}
		ms[l.GetName()] = m
		if l.GetHolderIdentity() == "" {
			continue
		}
		m.last = clk.Now()
		g, err := c.Get(ctx, namespace, l.GetName(), false)
		if err != nil || g.GetRemaining() == nil || g.GetLease().GetFencingToken() != l.GetFencingToken() {
			continue
		}
		ttl := l.GetLeaseDuration().AsDuration() + l.GetGracePeriod().AsDuration()
		elapsed := min(max(ttl-g.GetRemaining().AsDuration(), 0), ttl)
		m.last = clk.Now().Add(-elapsed)
	}
	return ms, resp.GetRevision(), nil
}

// MonitorOption configures a Monitor.
type MonitorOption func(*Monitor)

// WithMonitorClock sets the clock that heartbeats are timed on (default: the
// client's).
func WithMonitorClock(clk clock.Clock) MonitorOption { return func(m *Monitor) { m.clk = clk } }

// WithMemberEvents makes the Monitor send every state change to ch. Run
// blocks while ch is full, so nothing is lost; read it promptly.
func WithMemberEvents(ch chan<- MemberEvent) MonitorOption {
	return func(m *Monitor) { m.events = ch }
}

// Monitor follows every member of a heartbeat namespace through one watch
// and classifies it: Ready while its last heartbeat was observed within the
// lease duration, NotReady after that until duration plus grace, Unknown
// after that or when the lease is free or gone. Times are measured from the
// moment the Monitor observed each event, on its own clock: server wall
// clock times are never compared with the local one. The classification
// therefore lags the server by the watch's delivery delay, and a member's
// NotReady/Unknown states come from silence, before the server expires the
// lease.
//
// Silence counts only as far as the watch vouches for it: a live watch
// brings an event or a progress message at least every
// Config.WatchProgressInterval, and the members are classified as of the
// last message, so a NotReady or Unknown state is reported up to one
// interval late. When the node the Monitor watches stops answering, the
// states hold until the watch resumes on another node (after three silent
// intervals) and replays what it missed, so a frozen node never makes a
// renewing member NotReady. With WatchProgressInterval 0 the Monitor
// classifies on its clock alone.
type Monitor struct {
	c         *Client
	namespace string
	clk       clock.Clock
	events    chan<- MemberEvent
	// vouched: the watch brings progress, so silence counts only up to
	// its last message.
	vouched bool

	mu      sync.Mutex
	members map[string]*member
	heard   time.Time // the last message or read, on clk
	synced  chan struct{}
	poke    chan struct{}
}

// NewMonitor returns a monitor of namespace ("" means
// DefaultHeartbeatNamespace); Run starts it. It makes no call to the
// cluster; it refuses a namespace that is not a DNS-1123 label, a nil
// client and a nil clock (WithMonitorClock) with an error matching
// ErrInvalid.
func NewMonitor(c *Client, namespace string, opts ...MonitorOption) (*Monitor, error) {
	if c == nil {
		return nil, invalidf("NewMonitor: nil *Client")
	}
	if namespace == "" {
		namespace = DefaultHeartbeatNamespace
	}
	if err := validateNamespace(namespace); err != nil {
		return nil, invalidf("NewMonitor: %v", err)
	}
	m := &Monitor{
		c: c, namespace: namespace, clk: c.clock,
		members: make(map[string]*member),
		synced:  make(chan struct{}),
		poke:    make(chan struct{}, 1),
	}
	for _, f := range opts {
		if f != nil {
			f(m)
		}
	}
	if m.clk == nil {
		return nil, invalidf("NewMonitor: WithMonitorClock: nil clock")
	}
	m.vouched = c.cfg.WatchProgressInterval > 0
	return m, nil
}

// asOf returns the time the Monitor classifies at, for now: the last
// message of the watch, up to which it knows every renewal. m.mu is held.
func (m *Monitor) asOf(now time.Time) time.Time {
	if !m.vouched || m.heard.IsZero() || now.Before(m.heard) {
		return now
	}
	return m.heard
}

// hear records a message of the watch: silence up to now is real.
func (m *Monitor) hear() {
	m.mu.Lock()
	m.heard = m.clk.Now()
	m.mu.Unlock()
	m.wake()
}

// Synced is closed once Run has read the namespace for the first time.
func (m *Monitor) Synced() <-chan struct{} { return m.synced }

// Members returns every member, classified now, sorted by name.
func (m *Monitor) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.asOf(m.clk.Now())
	out := make([]Member, 0, len(m.members))
	for _, mb := range m.members {
		if !mb.deleted {
			out = append(out, mb.snapshot(now))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Run follows the namespace until ctx is done. It returns ctx's error, or
// an error that a retry cannot help.
func (m *Monitor) Run(ctx context.Context) error {
	rev, err := m.resync(ctx)
	for err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrInvalid) || errors.Is(err, ErrPermission) || errors.Is(err, ErrClosed) {
			return err
		}
		if err := m.c.sleep(ctx, m.c.cfg.BackoffMax); err != nil {
			return err
		}
		rev, err = m.resync(ctx)
	}
	close(m.synced)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- m.c.follow(ctx, &pb.WatchRequest{Namespace: m.namespace, StartRevision: rev}, m.apply,
			func() uint64 {
				for {
					rev, err := m.resync(ctx)
					if err == nil || ctx.Err() != nil {
						return rev
					}
					if m.c.sleep(ctx, m.c.cfg.BackoffMax) != nil {
						return 0
					}
				}
			}, m.hear)
	}()

	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		m.mu.Lock()
		now := m.clk.Now()
		evs, next, ok := m.evaluate(now)
		m.mu.Unlock()
		// Arm before reporting, so that whoever reads an event finds the
		// timer of the next change already set.
		if ok {
			if timer == nil {
				timer = m.clk.NewTimer(next.Sub(now))
			} else {
				timer.Reset(next.Sub(now))
			}
		} else if timer != nil {
			timer.Stop()
		}
		for _, ev := range evs {
			if m.events == nil {
				break
			}
			select {
			case m.events <- ev:
			case <-ctx.Done():
			}
		}
		var timerC <-chan time.Time
		if ok {
			timerC = timer.C()
		}
		select {
		case <-timerC:
		case <-m.poke:
		case err := <-watchErr:
			return err
		case <-ctx.Done():
			return <-watchErr
		}
	}
}

// resync replaces the members with a fresh read and returns its revision.
func (m *Monitor) resync(ctx context.Context) (uint64, error) {
	ms, rev, err := readMembers(ctx, m.c, m.namespace, m.clk)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.heard = m.clk.Now()
	for name, old := range m.members {
		nw, ok := ms[name]
		if !ok {
			old.deleted = true
			continue
		}
		nw.reported, nw.seen = old.reported, old.seen
		m.members[name] = nw
	}
	for name, nw := range ms {
		if _, ok := m.members[name]; !ok {
			m.members[name] = nw
		}
	}
	m.wake()
	return rev, nil
}

// apply records one watch event, stamped with the monitor's clock.
func (m *Monitor) apply(ev *pb.WatchEvent) {
	l := ev.GetLease()
	m.mu.Lock()
	defer m.mu.Unlock()
	mb := m.members[l.GetName()]
	if mb == nil || mb.deleted {
		old := mb
		mb = &member{}
		if old != nil {
			mb.reported, mb.seen = old.reported, old.seen
		}
		m.members[l.GetName()] = mb
	}
	mb.lease = proto.Clone(l).(*pb.Lease)
	switch ev.GetType() {
	case pb.WatchEvent_ADDED, pb.WatchEvent_ACQUIRED, pb.WatchEvent_RENEWED:
		mb.last = m.clk.Now()
	case pb.WatchEvent_RELEASED, pb.WatchEvent_EXPIRED:
		mb.lease.HolderIdentity = ""
	case pb.WatchEvent_DELETED:
		mb.lease.HolderIdentity = ""
		mb.deleted = true
	}
	m.wake()
}

func (m *Monitor) wake() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// evaluate classifies every member at now (as of the watch's last
// message, asOf), returns the transitions since the last evaluation and
// when the next one is due (none while the watch vouches: its next message
// moves the classification).
func (m *Monitor) evaluate(now time.Time) ([]MemberEvent, time.Time, bool) {
	now = m.asOf(now)
	var evs []MemberEvent
	var next time.Time
	has := false
	names := make([]string, 0, len(m.members))
	for name := range m.members {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		mb := m.members[name]
		snap := mb.snapshot(now)
		if mb.deleted {
			delete(m.members, name)
			if mb.seen {
				snap.State = StateUnknown
				evs = append(evs, MemberEvent{Member: snap, From: mb.reported, Deleted: true})
			}
			continue
		}
		if !mb.seen || snap.State != mb.reported {
			evs = append(evs, MemberEvent{Member: snap, From: mb.reported})
			mb.reported, mb.seen = snap.State, true
		}
		if t, ok := nextChange(snap.Holder, mb.last, snap.Duration, snap.Grace, now); ok && (!has || t.Before(next)) && !m.vouched {
			next, has = t, true
		}
	}
	return evs, next, has
}
