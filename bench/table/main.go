// Command table prints lease-bench and etcdpeer results side by side:
//
//	go run ./bench/table leasekeeper.jsonl [etcd.jsonl]
//
// Each file holds one JSON object per line, as the two tools print them.
// The ratio is leasekeeper / etcd: above 1 is better for rates, below 1 is
// better for times.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// row is one line of the table: a field of one workload's result.
type row struct {
	label string
	field string
}

// rows lists what to compare, per workload, in print order.
var rows = []struct {
	workload string
	rows     []row
}{
	{"grant", std("acquires/s")},
	{"keepalive", std("renewals/s")},
	{"keepalive_batch", []row{
		{"renewals/s", "renewals_per_s"}, {"target renewals/s", "target_per_s"},
		{"renewal gap p50 ms", "p50_ms"}, {"renewal gap p99 ms", "p99_ms"},
		{"lease expired", "lease_expired"}, {"server CPU s", "server_cpu_s"},
	}},
	{"lock", std("cycles/s")},
	{"lock_contended", append(std("cycles/s"), row{"handoff p50 ms", "handoff_p50_ms"}, row{"handoff p99 ms", "handoff_p99_ms"})},
	{"expiry_storm", []row{
		{"expired/s", "expired_per_s"}, {"lateness p50 ms", "p50_ms"}, {"lateness p99 ms", "p99_ms"},
		{"drain ms", "drain_ms"}, {"deadline spread ms", "deadline_spread_ms"}, {"grant s", "grant_s"}, {"server CPU s", "server_cpu_s"},
	}},
	{"failover", []row{{"recovery ms", "recovery_ms"}, {"lease survived", "lease_survived"}}},
	{"scale", []row{
		{"leases", "leases"}, {"grant/s", "grant_per_s"}, {"RSS MiB", "rss_mb"}, {"snapshot ms", "snapshot_ms"},
		{"restart catch-up ms", "restart_catchup_ms"}, {"failover ms", "failover_ms"},
	}},
}

func std(rate string) []row {
	return []row{{rate, "ops_per_s"}, {"p50 ms", "p50_ms"}, {"p99 ms", "p99_ms"}}
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: table leasekeeper.jsonl [etcd.jsonl]")
		os.Exit(2)
	}
	lk, err := load(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "table:", err)
		os.Exit(1)
	}
	etcd := map[string]map[string]any{}
	if len(os.Args) == 3 {
		if etcd, err = load(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "table:", err)
			os.Exit(1)
		}
	}
	header := fmt.Sprintf("%d cores (runtime.NumCPU)", runtime.NumCPU())
	if fs, ok := etcd["fdatasync"]; ok {
		header += fmt.Sprintf("; fdatasync p50 %s ms, p99 %s ms (%v)", format(fs["p50_ms"]), format(fs["p99_ms"]), fs["dir"])
	}
	fmt.Println(header)
	out := [][]string{{"workload", "metric", "leasekeeper", "etcd", "ratio"}}
	for _, w := range rows {
		a, b := lk[w.workload], etcd[w.workload]
		if a == nil && b == nil {
			continue
		}
		for _, r := range w.rows {
			va, vb := a[r.field], b[r.field]
			if va == nil && vb == nil {
				continue
			}
			out = append(out, []string{w.workload, r.label, format(va), format(vb), ratio(va, vb)})
		}
	}
	printTable(out)
	fmt.Println("ratio = leasekeeper / etcd: above 1 is better for rates, below 1 is better for ms and CPU")
}

// load reads one JSON object per line, keyed by workload (the last wins).
func load(path string) (map[string]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		if w, ok := m["workload"].(string); ok {
			out[w] = m
		}
	}
	return out, sc.Err()
}

// format prints a number compactly; a list (per node) is printed whole.
func format(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case float64:
		switch {
		case x == float64(int64(x)) && (x >= 1000 || x <= -1000 || x == 0):
			return strconv.FormatInt(int64(x), 10)
		case x >= 100 || x <= -100:
			return strconv.FormatFloat(x, 'f', 0, 64)
		case x >= 10 || x <= -10:
			return strconv.FormatFloat(x, 'f', 1, 64)
		default:
			return strconv.FormatFloat(x, 'f', 2, 64)
		}
	case []any:
		var parts []string
		for _, e := range x {
			parts = append(parts, format(e))
		}
		return strings.Join(parts, "/")
	}
	return fmt.Sprint(v)
}

func ratio(a, b any) string {
	x, ok1 := a.(float64)
	y, ok2 := b.(float64)
	if !ok1 || !ok2 || y == 0 {
		return "-"
	}
	return strconv.FormatFloat(x/y, 'f', 2, 64)
}

// printTable writes the rows as an aligned table with | separators.
func printTable(rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for n, r := range rows {
		var cells []string
		for i, c := range r {
			if i >= 2 {
				cells = append(cells, fmt.Sprintf("%*s", width[i], c))
			} else {
				cells = append(cells, fmt.Sprintf("%-*s", width[i], c))
			}
		}
		fmt.Println(strings.TrimRight(strings.Join(cells, " | "), " "))
		if n == 0 {
			var dashes []string
			for _, w := range width {
				dashes = append(dashes, strings.Repeat("-", w))
			}
			fmt.Println(strings.Join(dashes, "-|-"))
		}
	}
}
