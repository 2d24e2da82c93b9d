package client

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's collectors. They always exist, so the code never
// checks for nil; they are registered only when Config.Registerer is set.
type metrics struct {
	renewals  *prometheus.CounterVec
	messages  prometheus.Counter
	lost      *prometheus.CounterVec
	holdings  prometheus.Gauge
	lockWait  prometheus.Histogram
	acquires  *prometheus.CounterVec
	reconnect prometheus.Counter
	cleanups  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_client_renewals_total",
			Help: "Renewals answered to the renewal engine, by result (ok, or the gRPC code).",
		}, []string{"result"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_client_keepalive_messages_total",
			Help: "KeepAlive messages sent; each renews a batch of holdings.",
		}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_client_holdings_lost_total",
			Help: "Holdings that ended without the caller asking, by reason.",
		}, []string{"reason"}),
		holdings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leasekeeper_client_holdings",
			Help: "Holdings that the renewal engine keeps alive now.",
		}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leasekeeper_client_lock_wait_seconds",
			Help:    "Time that Mutex.Lock and LeaderElector campaigns waited before holding the lease.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_client_acquire_attempts_total",
			Help: "Attempts to take a holding, by result (acquired, held, error).",
		}, []string{"result"}),
		reconnect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_client_keepalive_stream_failures_total",
			Help: "KeepAlive streams abandoned after an error or an unanswered batch.",
		}),
		cleanups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leasekeeper_client_abandoned_acquires_total",
			Help: "Acquires given up with their outcome unknown, each followed by a cleanup that frees what it may have taken.",
		}),
	}
	if reg == nil {
		return m
	}
	m.renewals = register(reg, m.renewals)
	m.messages = register(reg, m.messages)
	m.lost = register(reg, m.lost)
	m.holdings = register(reg, m.holdings)
	m.lockWait = register(reg, m.lockWait)
	m.acquires = register(reg, m.acquires)
	m.reconnect = register(reg, m.reconnect)
	m.cleanups = register(reg, m.cleanups)
	return m
}

// register registers c, or returns the collector already registered under
// its name, so several clients can share a Registerer.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
