package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// Output formats.
const (
	outTable = "table"
	outWide  = "wide"
	outJSON  = "json"
	outYAML  = "yaml"
	outLine  = "line"
)

// leaseList is a list of leases as JSON and YAML show it.
type leaseList struct {
	Items []client.LeaseJSON `json:"items"`
}

func newLeaseList(leases []*pb.Lease) leaseList {
	l := leaseList{Items: []client.LeaseJSON{}}
	for _, lease := range leases {
		l.Items = append(l.Items, client.NewLeaseJSON(lease))
	}
	return l
}

// writeObject prints v as indented JSON or as YAML.
func writeObject(w io.Writer, output string, v any) error {
	var b []byte
	var err error
	if output == outYAML {
		b, err = yaml.Marshal(v)
	} else {
		b, err = json.MarshalIndent(v, "", "  ")
		b = append(b, '\n')
	}
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 8, 3, ' ', 0) }

// leaseRow is a lease in a table, with its remaining time when known.
type leaseRow struct {
	lease     *pb.Lease
	remaining *durationpb.Duration
}

// writeLeaseTable prints rows like kubectl get leases.
func (a *app) writeLeaseTable(w io.Writer, rows []leaseRow, wide, allNamespaces bool) error {
	tw := newTable(w)
	var header []string
	if allNamespaces {
		header = append(header, "NAMESPACE")
	}
	header = append(header, "NAME", "HOLDER", "AGE")
	if wide {
		header = append(header, "TOKEN", "TRANSITIONS", "DURATION", "EXPIRES IN")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		l := r.lease
		var cols []string
		if allNamespaces {
			cols = append(cols, l.GetNamespace())
		}
		cols = append(cols, l.GetName(), orNone(l.GetHolderIdentity()), a.age(l.GetCreateTime()))
		if wide {
			expires := "-"
			if r.remaining != nil && l.GetHolderIdentity() != "" {
				expires = shortDuration(r.remaining.AsDuration())
			}
			cols = append(cols,
				fmt.Sprint(l.GetFencingToken()),
				fmt.Sprint(l.GetLeaseTransitions()),
				shortDuration(l.GetLeaseDuration().AsDuration()),
				expires)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	return tw.Flush()
}

// describeLease prints every field of l for people.
func describeLease(w io.Writer, l *pb.Lease, remaining *durationpb.Duration) error {
	tw := newTable(w)
	field := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	field("Name", l.GetName())
	field("Namespace", l.GetNamespace())
	labels := formatLabels(l.GetLabels())
	if len(labels) == 0 {
		field("Labels", "<none>")
	}
	for i, kv := range labels {
		if i == 0 {
			field("Labels", kv)
		} else {
			fmt.Fprintf(tw, "\t%s\n", kv)
		}
	}
	field("Holder", orNone(l.GetHolderIdentity()))
	field("Fencing Token", fmt.Sprint(l.GetFencingToken()))
	field("Lease Duration", shortDuration(l.GetLeaseDuration().AsDuration()))
	field("Grace Period", shortDuration(l.GetGracePeriod().AsDuration()))
	field("Acquire Time", longTime(l.GetAcquireTime()))
	field("Renew Time", longTime(l.GetRenewTime()))
	lockDelay := "<none>"
	if d := l.GetLockDelay(); d != nil {
		lockDelay = shortDuration(d.AsDuration())
	}
	field("Lock Delay", lockDelay)
	rem := "<unknown>"
	switch {
	case l.GetLockDelayed() && remaining != nil:
		rem = "<lock delay, ends in " + shortDuration(remaining.AsDuration()) + ">"
	case l.GetLockDelayed():
		rem = "<lock delay>"
	case l.GetHolderIdentity() == "":
		rem = "<free>"
	case remaining != nil:
		rem = shortDuration(remaining.AsDuration())
	}
	field("Remaining", rem)
	field("Lease Transitions", fmt.Sprint(l.GetLeaseTransitions()))
	field("Resource Version", fmt.Sprint(l.GetResourceVersion()))
	field("Create Revision", fmt.Sprint(l.GetCreateRevision()))
	field("Create Time", longTime(l.GetCreateTime()))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.GetHistory()) == 0 {
		_, err := fmt.Fprintln(w, "History:\t<none>")
		return err
	}
	fmt.Fprintln(w, "History:")
	tw = newTable(w)
	fmt.Fprintln(tw, "  HOLDER\tTOKEN\tSTART\tEND\tREASON")
	for _, h := range l.GetHistory() {
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", orNone(h.GetHolderIdentity()), h.GetFencingToken(),
			longTime(h.GetStartTime()), longTime(h.GetEndTime()), orDash(h.GetEndReason()))
	}
	return tw.Flush()
}

// holdingLine is the one-line human form of a holding:
// "acquired default/db holder=alice token=7 duration=10s grace=2s remaining=12s".
func holdingLine(verb string, l *pb.Lease, remaining *durationpb.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s/%s holder=%s token=%d", verb, l.GetNamespace(), l.GetName(), l.GetHolderIdentity(), l.GetFencingToken())
	if d := l.GetLeaseDuration(); d != nil {
		fmt.Fprintf(&b, " duration=%s", shortDuration(d.AsDuration()))
	}
	if g := l.GetGracePeriod(); g != nil {
		fmt.Fprintf(&b, " grace=%s", shortDuration(g.AsDuration()))
	}
	if remaining != nil {
		fmt.Fprintf(&b, " remaining=%s", shortDuration(remaining.AsDuration()))
	}
	return b.String()
}

func formatLabels(labels map[string]string) []string {
	kvs := make([]string, 0, len(labels))
	for k, v := range labels {
		kvs = append(kvs, k+"="+v)
	}
	sort.Strings(kvs)
	return kvs
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func longTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}

// shortDuration rounds d for people: 10s, 1.5s, 250ms, 2m30s.
func shortDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// age is how long ago ts was, in kubectl's style: the wall clocks of two
// machines are compared here only for people to read.
func (a *app) age(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "<unknown>"
	}
	return humanDuration(a.now().Sub(ts.AsTime()))
}

// humanDuration follows kubectl's HumanDuration: two units of precision
// while they help.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	seconds := int(d / time.Second)
	minutes := int(d / time.Minute)
	hours := int(d / time.Hour)
	days := hours / 24
	two := func(big int, bigUnit string, small int, smallUnit string) string {
		if small == 0 {
			return fmt.Sprintf("%d%s", big, bigUnit)
		}
		return fmt.Sprintf("%d%s%d%s", big, bigUnit, small, smallUnit)
	}
	switch {
	case seconds < 120:
		return fmt.Sprintf("%ds", seconds)
	case minutes < 10:
		return two(minutes, "m", seconds%60, "s")
	case minutes < 180:
		return fmt.Sprintf("%dm", minutes)
	case hours < 8:
		return two(hours, "h", minutes%60, "m")
	case hours < 48:
		return fmt.Sprintf("%dh", hours)
	case hours < 24*8:
		return two(days, "d", hours%24, "h")
	case days < 365*2:
		return fmt.Sprintf("%dd", days)
	case days < 365*8:
		return two(days/365, "y", days%365, "d")
	default:
		return fmt.Sprintf("%dy", days/365)
	}
}
