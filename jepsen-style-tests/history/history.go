// Package history records what the chaos suite's clients and nemesis did:
// every operation with its invocation and completion time on one monotonic
// clock, its arguments and its outcome, and every fault with its start and
// end. The checkers read nothing else.
//
// Outcomes follow Jepsen: OK and Fail are definite (the operation took
// effect, or certainly did not), Info is unknown (a timeout or a lost reply:
// the operation may have taken effect at any time after its invocation).
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Operation kinds.
const (
	// Acquire, Renew, Release and Get are the lease API calls.
	Acquire = "acquire"
	Renew   = "renew"
	Release = "release"
	Get     = "get"
	// Write is a write to a fenced register, made under a lock.
	Write = "write"
	// Hold records a mutex client's belief: at Call it held the lock with
	// Token and believed so until Deadline. It is not a call.
	Hold = "hold"
)

// Outcome types.
const (
	OK   = "ok"
	Fail = "fail"
	Info = "info"
)

// Workloads that produce operations.
const (
	// WorkloadLease is raw lease calls, one gRPC attempt per operation, so
	// every outcome is known exactly: the linearizability checker reads
	// these.
	WorkloadLease = "lease"
	// WorkloadMutex is lock/unlock cycles through the Go client (which
	// retries internally), plus fenced-register writes under the lock.
	WorkloadMutex = "mutex"
	// WorkloadOneShot is holders that renew through the followers only,
	// each attempt a plain unary call on a connection of its own (as
	// `leasectl renew` makes it), retrying a renewal that went unanswered
	// on the next follower: Chain and Attempt tie the attempts together.
	WorkloadOneShot = "oneshot"
	// WorkloadSemaphore is acquire/release cycles on a client.Semaphore,
	// waiting in the server's queue: Lease is the slot taken (the
	// semaphore's name when none was), Slots the semaphore's size.
	WorkloadSemaphore = "semaphore"
)

// Error classes of a Fail or Info outcome.
const (
	ErrStale       = "stale"        // FailedPrecondition: not the current holding
	ErrNotFound    = "not-found"    // NotFound
	ErrUnavailable = "unavailable"  // Unavailable: no leader, node unreachable
	ErrTimeout     = "timeout"      // DeadlineExceeded
	ErrNotSent     = "not-sent"     // the client could not connect: certainly not applied
	ErrOther       = "other"        // anything else
	ErrRejected    = "rejected"     // a fenced write the register refused
	ErrNotAcquired = "not-acquired" // acquire answered acquired=false (an OK outcome)
)

// Op is one operation of the history.
type Op struct {
	// Index is the position in the history, set by the Recorder.
	Index int `json:"index"`
	// Process identifies the client worker, unique across workloads.
	Process  int    `json:"process"`
	Workload string `json:"workload"`
	Kind     string `json:"kind"`
	// Lease is the lease name (the lock name for the mutex workload).
	Lease  string `json:"lease"`
	Holder string `json:"holder,omitempty"`
	// Token is the fencing token the call carried (renew, release, write).
	Token uint64 `json:"token,omitempty"`
	// Duration is the lease duration an acquire asked for; renewals reuse
	// the duration of the holding.
	Duration time.Duration `json:"duration_ns,omitempty"`
	// Call and Return are nanoseconds since the run started, on the
	// recorder's monotonic clock.
	Call   int64  `json:"call"`
	Return int64  `json:"return"`
	Type   string `json:"type"`
	// ErrClass is one of the Err* classes; Err the error text.
	ErrClass string `json:"err_class,omitempty"`
	Err      string `json:"err,omitempty"`
	// Node is the endpoint that the call went to.
	Node string `json:"node,omitempty"`
	// Chain names the attempts of one renewal, which a one-shot holder
	// retries until it is answered (unique in the run; 0: not retried);
	// Attempt counts them from 1.
	Chain   int64 `json:"chain,omitempty"`
	Attempt int   `json:"attempt,omitempty"`
	// Slots is the size of the semaphore of a semaphore operation.
	Slots int `json:"slots,omitempty"`

	// Acquired is acquire's answer; Renewed whether it said "renewed".
	Acquired bool `json:"acquired,omitempty"`
	Renewed  bool `json:"renewed,omitempty"`
	// Res* describe the lease as the answer showed it: the current holder
	// (empty when free), the token of the current or last holding and the
	// transitions count. ResFound is false when the answer had no lease.
	ResFound       bool   `json:"res_found,omitempty"`
	ResHolder      string `json:"res_holder,omitempty"`
	ResToken       uint64 `json:"res_token,omitempty"`
	ResTransitions int64  `json:"res_transitions,omitempty"`
	// ResLockDelay is the lock delay the answer's lease showed: for an
	// acquire that took the lease, the delay the server kept for the new
	// holding (0 when it dropped it, as a cluster with an older member does).
	ResLockDelay time.Duration `json:"res_lock_delay_ns,omitempty"`

	// Deadline is, for an OK acquire or renew of the mutex workload, the
	// client's safe deadline (sent + duration*(1-maxDrift) - margin) on the
	// recorder's clock: the end of its belief that it holds the lock.
	Deadline int64 `json:"deadline,omitempty"`
	// Seq orders register writes as the register applied them.
	Seq int `json:"seq,omitempty"`
	// Accepted is a register write's result.
	Accepted bool `json:"accepted,omitempty"`
	// Unchecked marks a write made without checking the deadline first:
	// after a client pause, or by a deliberately stale writer.
	Unchecked bool `json:"unchecked,omitempty"`
}

// Mutating reports whether the operation can change the lease table.
func (o *Op) Mutating() bool {
	return o.Kind == Acquire || o.Kind == Renew || o.Kind == Release
}

// Fault is one nemesis action, from the moment it was applied to the moment
// it was healed.
type Fault struct {
	Kind  string   `json:"kind"`
	Start int64    `json:"start"`
	End   int64    `json:"end"`
	Nodes []string `json:"nodes,omitempty"`
	// Detail says what exactly happened ("n1 | n2 n3", "rate 1.01").
	Detail string `json:"detail,omitempty"`
	// MajorityConnected is false when the fault left no majority of nodes
	// that run and reach each other.
	MajorityConnected bool `json:"majority_connected"`
	// Outside lists, when a majority is connected, the nodes outside it
	// (down, paused, cut off from it, or on one side of a bridge, which
	// belongs to one of two majorities only): a call through them may
	// fail with a majority connected.
	Outside []string `json:"outside,omitempty"`
	// Negative marks a fault beyond the documented bounds (a negative
	// control), which the checkers are expected to catch.
	Negative bool   `json:"negative,omitempty"`
	Err      string `json:"err,omitempty"`
}

// Meta describes the run that made a history: the parameters that the
// checkers need.
type Meta struct {
	Mode     string  `json:"mode"`
	Nodes    int     `json:"nodes"`
	MaxDrift float64 `json:"max_drift"`
	// Margin is subtracted from client deadlines.
	Margin time.Duration `json:"margin_ns"`
	// Leases are the lease workload's leases, Locks the mutex workload's.
	Leases []string `json:"leases"`
	Locks  []string `json:"locks"`
	// Started is the wall-clock time of the recorder's start.
	Started time.Time `json:"started"`
	// ElectionTimeout is the nodes' Raft election timeout: the renewal
	// retry checker's bound is one election timeout plus a second
	// (0: unknown, that checker does not run).
	ElectionTimeout time.Duration `json:"election_timeout_ns,omitempty"`
	// NodeIDs maps each client endpoint to its node's ID, as faults name
	// nodes.
	NodeIDs map[string]string `json:"node_ids,omitempty"`
}

// History is a whole run's record.
type History struct {
	Meta   Meta    `json:"meta"`
	Ops    []Op    `json:"ops"`
	Faults []Fault `json:"faults"`
	// End is the recorder time when the run stopped.
	End int64 `json:"end"`
}

// Recorder collects operations and faults from many goroutines. Its clock
// is Go's monotonic clock from the moment it was made.
type Recorder struct {
	start  time.Time
	mu     sync.Mutex
	ops    []Op
	faults []Fault
}

// NewRecorder starts a recorder's clock.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now returns the nanoseconds since the recorder started.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// At converts a time on the same clock (with a monotonic reading) to
// recorder nanoseconds.
func (r *Recorder) At(t time.Time) int64 { return int64(t.Sub(r.start)) }

// Start returns the recorder's start time.
func (r *Recorder) Start() time.Time { return r.start }

// Add appends a completed operation and returns its index.
func (r *Recorder) Add(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.Index = len(r.ops)
	r.ops = append(r.ops, op)
	return op.Index
}

// AddFault appends a fault.
func (r *Recorder) AddFault(f Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f)
}

// History returns a copy of everything recorded, operations sorted by
// invocation time.
func (r *Recorder) History(meta Meta) *History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &History{
		Meta:   meta,
		Ops:    append([]Op(nil), r.ops...),
		Faults: append([]Fault(nil), r.faults...),
		End:    r.Now(),
	}
	h.Sort()
	return h
}

// Sort orders operations by invocation time (ties by return time) and
// renumbers them, and orders faults by start.
func (h *History) Sort() {
	sort.SliceStable(h.Ops, func(i, j int) bool {
		if h.Ops[i].Call != h.Ops[j].Call {
			return h.Ops[i].Call < h.Ops[j].Call
		}
		return h.Ops[i].Return < h.Ops[j].Return
	})
	for i := range h.Ops {
		h.Ops[i].Index = i
	}
	sort.SliceStable(h.Faults, func(i, j int) bool { return h.Faults[i].Start < h.Faults[j].Start })
}

// Counts returns the number of operations by outcome type.
func (h *History) Counts() (ok, fail, info int) {
	for _, o := range h.Ops {
		switch o.Type {
		case OK:
			ok++
		case Fail:
			fail++
		case Info:
			info++
		}
	}
	return ok, fail, info
}

// line is one line of a history file: exactly one field set.
type line struct {
	Meta  *Meta  `json:"meta,omitempty"`
	Op    *Op    `json:"op,omitempty"`
	Fault *Fault `json:"fault,omitempty"`
	End   *int64 `json:"end,omitempty"`
}

// WriteTo writes the history as JSON lines: the meta line, the operations,
// the faults and the end time.
func (h *History) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(line{Meta: &h.Meta}); err != nil {
		return cw.n, err
	}
	for i := range h.Ops {
		if err := enc.Encode(line{Op: &h.Ops[i]}); err != nil {
			return cw.n, err
		}
	}
	for i := range h.Faults {
		if err := enc.Encode(line{Fault: &h.Faults[i]}); err != nil {
			return cw.n, err
		}
	}
	end := h.End
	if err := enc.Encode(line{End: &end}); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Save writes the history to path.
func (h *History) Save(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := h.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Load reads a history written by WriteTo.
func Load(path string) (*History, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Read parses a history written by WriteTo.
func Read(r io.Reader) (*History, error) {
	h := &History{}
	dec := json.NewDecoder(r)
	for n := 1; ; n++ {
		var l line
		err := dec.Decode(&l)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("history: line %d: %w", n, err)
		}
		switch {
		case l.Meta != nil:
			h.Meta = *l.Meta
		case l.Op != nil:
			h.Ops = append(h.Ops, *l.Op)
		case l.Fault != nil:
			h.Faults = append(h.Faults, *l.Fault)
		case l.End != nil:
			h.End = *l.End
		}
	}
	h.Sort()
	return h, nil
}

// Ms formats recorder nanoseconds as milliseconds, for messages.
func Ms(ns int64) string { return fmt.Sprintf("%.1fms", float64(ns)/1e6) }
