package transport

import (
	"context"
	"path"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metrics counts gRPC requests by method and code. Register it once on the
// node's registry and pass it to ServerOptions.
type Metrics struct {
	hot      sync.Map // full method name -> *methodMetrics
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	renewals *prometheus.CounterVec
	renewDur prometheus.Histogram
	acquires *prometheus.CounterVec
	releases *prometheus.CounterVec
	// forwardCut counts forwarded calls and KeepAlive messages that got
	// no answer from the leader.
	forwardCut *prometheus.CounterVec
	// watches is the number of watches the node holds open.
	watches prometheus.Gauge
}

// NewMetrics builds the server's metrics and registers them on reg (nil:
// not registered, still counted).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_grpc_requests_total",
			Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leasekeeper_grpc_request_duration_seconds",
			Help:    "Time to handle a unary gRPC request, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"method"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_lease_renewals_total",
			Help: "Lease renewals answered by this node (unary and KeepAlive), by result.",
		}, []string{"result"}),
		renewDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leasekeeper_lease_renewal_duration_seconds",
			Help:    "Time for the leader to commit a renewal (a unary Renew or one KeepAlive batch).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		acquires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_lease_acquires_total",
			Help: "Acquire requests decided by this node as leader, by result (acquired, renewed, held, error).",
		}, []string{"result"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_lease_releases_total",
			Help: "Release requests decided by this node as leader, by result.",
		}, []string{"result"}),
		forwardCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leasekeeper_forward_interrupted_total",
			Help: "Calls and KeepAlive messages this node forwarded that got no answer from the leader, by reason (leader_changed, leader_silent, failed) and action (retried on the next leader, gave_up).",
		}, []string{"reason", "action"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leasekeeper_watches_open",
			Help: "Watches this node holds open (Watch, WatchBatches and the watches of waiting Acquires).",
		}),
	}
	// Every result exists from the start, so rate() and the alert rules
	// see a zero rather than no series.
	for _, r := range []string{"ok", "not_found", "not_holder", "error"} {
		m.renewals.WithLabelValues(r)
		m.releases.WithLabelValues(r)
	}
	for _, r := range []string{"acquired", "renewed", "held", "error"} {
		m.acquires.WithLabelValues(r)
	}
	for _, r := range []string{"leader_changed", "leader_silent", "failed"} {
		for _, a := range []string{"retried", "gave_up"} {
			m.forwardCut.WithLabelValues(r, a)
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.renewals, m.renewDur, m.acquires, m.releases, m.forwardCut, m.watches} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// methodMetrics holds one method's series that every call touches, looked
// up once instead of by label on each call.
type methodMetrics struct {
	name     string
	ok       prometheus.Counter
	duration prometheus.Observer
}

func (m *Metrics) method(full string) *methodMetrics {
	if v, ok := m.hot.Load(full); ok {
		return v.(*methodMetrics)
	}
	name := path.Base(full)
	mm := &methodMetrics{
		name:     name,
		ok:       m.requests.WithLabelValues(name, codes.OK.String()),
		duration: m.duration.WithLabelValues(name),
	}
	v, _ := m.hot.LoadOrStore(full, mm)
	return v.(*methodMetrics)
}

func (m *Metrics) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now() // for the metric only
		resp, err := h(ctx, req)
		mm := m.method(info.FullMethod)
		if err == nil {
			mm.ok.Inc()
		} else {
			m.requests.WithLabelValues(mm.name, status.Code(err).String()).Inc()
		}
		mm.duration.Observe(time.Since(start).Seconds())
		return resp, err
	}
}

func (m *Metrics) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(srv, ss)
		m.requests.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Inc()
		return err
	}
}
