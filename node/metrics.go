package node

import (
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasekeeper/leasekeeper/fsm"
)

// metrics are always built and registered only when a Registerer is given,
// so the hot paths update them without nil checks.
type metrics struct {
	applyLatency   prometheus.Histogram
	confirmLatency prometheus.Histogram
	localRenewals  *prometheus.CounterVec
	// The two series of localRenewals, looked up once: they are counted
	// on every renewal.
	localOK, localLog prometheus.Counter
	expiries          prometheus.Counter
	transitions       prometheus.Counter
	events            *prometheus.CounterVec
	crashElections    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	m := &metrics{
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leasekeeper_raft_apply_duration_seconds",
			Help:    "Time from proposing a command on the leader to its FSM result.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		confirmLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leasekeeper_leader_confirm_duration_seconds",
			Help:    "Time of one round in which the leader confirms its leadership with a quorum, for renewals without a log write.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		localRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_local_renewals_total",
			Help: "Renewals the leader tried to confirm without a log write: result=ok, or log when they went through the log instead.",
		}, []string{"result"}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_lease_expiries_total",
			Help: "Holdings ended by expiry, as applied by this node's FSM.",
		}),
		transitions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_lease_holder_transitions_total",
			Help: "New holdings begun (each raises leaseTransitions and issues a fencing token).",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_lease_events_total",
			Help: "Changes applied to the lease table, by type.",
		}, []string{"type"}),
		crashElections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_leader_crash_elections_total",
			Help: "Elections this node began early because its silent leader's Raft port refused connections.",
		}),
	}
	m.localOK, m.localLog = m.localRenewals.WithLabelValues("ok"), m.localRenewals.WithLabelValues("log")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.applyLatency, m.confirmLatency, m.localRenewals, m.expiries, m.transitions, m.events, m.crashElections, &collector{n: n}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(evs []fsm.Event) {
	for _, ev := range evs {
		m.events.WithLabelValues(ev.Type.String()).Inc()
		switch ev.Type {
		case fsm.EventExpired:
			m.expiries.Inc()
		case fsm.EventAdded, fsm.EventAcquired:
			if ev.Lease.Held() {
				m.transitions.Inc()
			}
		}
	}
}

// collector reads Raft and the FSM at scrape time.
type collector struct{ n *Node }

var (
	descState     = prometheus.NewDesc("leasekeeper_raft_state", "1 for this node's current Raft state.", []string{"state"}, nil)
	descTerm      = prometheus.NewDesc("leasekeeper_raft_term", "Current Raft term.", nil, nil)
	descCommit    = prometheus.NewDesc("leasekeeper_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied   = prometheus.NewDesc("leasekeeper_raft_applied_index", "Raft applied index.", nil, nil)
	descLastIndex = prometheus.NewDesc("leasekeeper_raft_last_log_index", "Last index in the Raft log.", nil, nil)
	descContact   = prometheus.NewDesc("leasekeeper_raft_last_contact_seconds", "Time since this follower last heard from the leader (0 on the leader).", nil, nil)
	descSnapIdx   = prometheus.NewDesc("leasekeeper_raft_last_snapshot_index", "Index of the latest snapshot.", nil, nil)
	descPeers     = prometheus.NewDesc("leasekeeper_raft_peers", "Voters in the configuration.", nil, nil)
	descLeases    = prometheus.NewDesc("leasekeeper_leases", "Leases in the table, by state.", []string{"state"}, nil)
	descRevision  = prometheus.NewDesc("leasekeeper_store_revision", "Revision of the lease table.", nil, nil)
	descToken     = prometheus.NewDesc("leasekeeper_fencing_token_last", "Highest fencing token issued.", nil, nil)
	descHasLeader = prometheus.NewDesc("leasekeeper_has_leader", "1 when this node knows a leader.", nil, nil)
	descSnaps     = prometheus.NewDesc("leasekeeper_fsm_snapshots_total", "Snapshots this node's FSM has written.", nil, nil)
	descSnapDur   = prometheus.NewDesc("leasekeeper_fsm_snapshot_last_duration_seconds", "Time the last snapshot took to write.", nil, nil)
	descWaiters   = prometheus.NewDesc("leasekeeper_waiters", "Waiters queued: queue=lease (a lease's own queue) or semaphore (a semaphore's).", []string{"queue"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descCommit, descApplied, descLastIndex, descContact,
		descSnapIdx, descPeers, descLeases, descRevision, descToken, descHasLeader, descSnaps, descSnapDur, descWaiters} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.n.raft
	if r == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	state := r.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == state {
			v = 1
		}
		gauge(descState, v, stateName(s))
	}
	gauge(descTerm, float64(r.CurrentTerm()))
	gauge(descCommit, float64(r.CommitIndex()))
	gauge(descApplied, float64(r.AppliedIndex()))
	gauge(descLastIndex, float64(r.LastIndex()))
	contact := 0.0
	if state != raft.Leader {
		if lc := r.LastContact(); !lc.IsZero() {
			contact = time.Since(lc).Seconds()
		}
	}
	gauge(descContact, contact)
	stats := r.Stats()
	if v, err := strconv.ParseFloat(stats["last_snapshot_index"], 64); err == nil {
		gauge(descSnapIdx, v)
	}
	if v, err := strconv.ParseFloat(stats["num_peers"], 64); err == nil {
		gauge(descPeers, v+1)
	}
	s := c.n.fsm.Stats()
	gauge(descLeases, float64(s.Held), "held")
	gauge(descLeases, float64(s.Leases-s.Held), "free")
	leaseWaiters, semWaiters := c.n.fsm.WaiterCounts()
	gauge(descWaiters, float64(leaseWaiters), "lease")
	gauge(descWaiters, float64(semWaiters), "semaphore")
	gauge(descRevision, float64(s.Revision))
	gauge(descToken, float64(s.LastToken))
	id, _ := c.n.Leader()
	has := 0.0
	if id != "" {
		has = 1
	}
	gauge(descHasLeader, has)
	count, last := c.n.fsm.SnapshotStats()
	ch <- prometheus.MustNewConstMetric(descSnaps, prometheus.CounterValue, float64(count))
	gauge(descSnapDur, last.Seconds())
}
