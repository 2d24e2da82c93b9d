package client

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// LeaseJSON is a lease in the shape that docs/design.md names and leasectl prints:
// Kubernetes Lease field names, durations in (possibly fractional) seconds,
// times in RFC 3339 with nanoseconds, omitted when unset. Encode it with
// encoding/json, or with sigs.k8s.io/yaml for the same object as YAML.
type LeaseJSON struct {
	Namespace            string            `json:"namespace"`
	Name                 string            `json:"name"`
	HolderIdentity       string            `json:"holderIdentity"`
	LeaseDurationSeconds float64           `json:"leaseDurationSeconds"`
	GracePeriodSeconds   float64           `json:"gracePeriodSeconds"`
	AcquireTime          string            `json:"acquireTime,omitempty"`
	RenewTime            string            `json:"renewTime,omitempty"`
	LeaseTransitions     int64             `json:"leaseTransitions"`
	FencingToken         uint64            `json:"fencingToken"`
	Labels               map[string]string `json:"labels,omitempty"`
	ResourceVersion      uint64            `json:"resourceVersion"`
	CreateTime           string            `json:"createTime,omitempty"`
	History              []HoldingJSON     `json:"history,omitempty"`
	CreateRevision       uint64            `json:"createRevision,omitempty"`
}

// HoldingJSON is one entry of LeaseJSON.History.
type HoldingJSON struct {
	HolderIdentity string `json:"holderIdentity"`
	FencingToken   uint64 `json:"fencingToken"`
	StartTime      string `json:"startTime,omitempty"`
	EndTime        string `json:"endTime,omitempty"`
	EndReason      string `json:"endReason,omitempty"`
}

// NewLeaseJSON converts l; a nil l gives the zero LeaseJSON.
func NewLeaseJSON(l *pb.Lease) LeaseJSON {
	j := LeaseJSON{
		Namespace:            l.GetNamespace(),
		Name:                 l.GetName(),
		HolderIdentity:       l.GetHolderIdentity(),
		LeaseDurationSeconds: l.GetLeaseDuration().AsDuration().Seconds(),
		GracePeriodSeconds:   l.GetGracePeriod().AsDuration().Seconds(),
		AcquireTime:          jsonTime(l.GetAcquireTime()),
		RenewTime:            jsonTime(l.GetRenewTime()),
		LeaseTransitions:     l.GetLeaseTransitions(),
		FencingToken:         l.GetFencingToken(),
		Labels:               l.GetLabels(),
		ResourceVersion:      l.GetResourceVersion(),
		CreateTime:           jsonTime(l.GetCreateTime()),
		CreateRevision:       l.GetCreateRevision(),
	}
	for _, h := range l.GetHistory() {
		j.History = append(j.History, HoldingJSON{
			HolderIdentity: h.GetHolderIdentity(),
			FencingToken:   h.GetFencingToken(),
			StartTime:      jsonTime(h.GetStartTime()),
			EndTime:        jsonTime(h.GetEndTime()),
			EndReason:      h.GetEndReason(),
		})
	}
	return j
}

func jsonTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}
