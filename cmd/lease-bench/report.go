package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// pct returns the nearest-rank percentile of sorted latencies, in ms (the
// same rule as etcdpeer, so the two tools' figures compare).
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return ms(sorted[max(int(math.Ceil(p*float64(len(sorted))))-1, 0)])
}

// ms is d in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// round1 rounds to one decimal, for rates.
func round1(f float64) float64 { return math.Round(f*10) / 10 }

// round2 rounds to two decimals, for seconds.
func round2(f float64) float64 { return math.Round(f*100) / 100 }

// emitMu keeps result lines whole when workloads report from goroutines.
var emitMu sync.Mutex

// emit prints one JSON object on stdout with its keys in the given order.
func emit(kv ...any) {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := json.Marshal(kv[i])
		v, err := json.Marshal(kv[i+1])
		if err != nil {
			v, _ = json.Marshal(fmt.Sprint(kv[i+1]))
		}
		parts = append(parts, string(k)+":"+string(v))
	}
	emitMu.Lock()
	defer emitMu.Unlock()
	fmt.Println("{" + strings.Join(parts, ",") + "}")
}

// note prints a line for people on stderr.
func note(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lease-bench: "+format+"\n", args...)
}

// latencies collects durations from many goroutines; each goroutine keeps
// its own slice and merges it once, so recording never contends.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) merge(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

// sorted returns the collected durations, sorted.
func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.all)
	return l.all
}

// errCount counts errors and keeps the last one, for a stderr note.
type errCount struct {
	mu   sync.Mutex
	n    int
	last error
}

func (e *errCount) add(err error) {
	e.mu.Lock()
	e.n++
	e.last = err
	e.mu.Unlock()
}

func (e *errCount) get() (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n, e.last
}
