package leasing

import "github.com/prometheus/client_golang/prometheus"

// metrics are always built, and registered only when the caller gives a
// Registerer: the hot paths then update them without nil checks.
type metrics struct {
	proposed prometheus.Counter
	lateness prometheus.Histogram
	size     prometheus.Gauge
	ok       prometheus.Counter
	failed   prometheus.Counter
	doubtful prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	proposals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "leasekeeper_expiry_proposals_total",
		Help: "Expire proposals made by the leader, by result.",
	}, []string{"result"})
	m := &metrics{
		proposed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_lease_expiries_proposed_total",
			Help: "Holdings the leader proposed to expire.",
		}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "leasekeeper_lease_expiry_lateness_seconds",
			Help: "Time from a holding's deadline to the proposal that expires it.",
			// 1ms to about 32s: normally a few ms, seconds under a rate cap.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leasekeeper_deadline_table_size",
			Help: "Holdings in the leader's deadline table, including those being expired.",
		}),
		doubtful: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_renewals_in_doubt_total",
			Help: "Renewals the leader could not acknowledge without a log write because an Expire of their holding was given up on and may still commit: they go through the log.",
		}),
		// Resolved once so that a proposal does not look up labels.
		ok:     proposals.WithLabelValues("ok"),
		failed: proposals.WithLabelValues("error"),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.proposed, m.lateness, m.size, m.doubtful, proposals} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
