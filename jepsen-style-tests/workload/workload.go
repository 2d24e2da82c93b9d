// Package workload is the chaos suite's clients: N concurrent workers that
// call a real cluster and record every call in a history.Recorder.
//
// Three kinds of worker run side by side:
//
//   - lease workers make random acquire/renew/release/get calls on a few
//     leases, as raw gRPC calls with one attempt each, so the
//     linearizability checker sees exactly what each request did;
//   - mutex workers run lock / write under the lock / unlock cycles through
//     the Go client (with its failover), compute their safe deadline from
//     each request's send time, and write to a fenced register per lock
//     while they believe they hold it;
//   - one-shot holders renew a lease of their own through the followers
//     only, each attempt a plain unary call on a connection of its own
//     (as `leasectl renew` makes it), and retry a renewal that went
//     unanswered on the next follower, recording every attempt.
//
// The nemesis can pause a mutex worker (PauseClient) for longer than its
// lease, the way a GC pause would.
package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// Config configures a workload. Start from DefaultConfig.
type Config struct {
	Endpoints []string
	// Clients is the number of workers; MutexClients of them run the mutex
	// workload, the rest the lease workload. OneShotClients one-shot
	// holders run besides them.
	Clients        int
	MutexClients   int
	OneShotClients int
	// OneShotRenewEvery is the one-shot holders' renewal period;
	// OneShotRetryDelay how long one waits before it retries an
	// unanswered renewal (a delay past an election timeout plus a second
	// breaks the renewal-retry rule: a negative control); OneShotGiveUp
	// how long it retries one renewal.
	OneShotRenewEvery time.Duration
	OneShotRetryDelay time.Duration
	OneShotGiveUp     time.Duration
	// SemaphoreClients workers share a semaphore of SemaphoreSlots slots
	// (SemaphoreName), waiting in its queue on the server.
	SemaphoreClients int
	SemaphoreSlots   int
	// Leader, when set, returns the endpoint of the cluster's leader as
	// last seen ("" when unknown); the one-shot holders call the others.
	Leader func() string
	// Leases and Locks are how many lease names each workload uses.
	Leases    int
	Locks     int
	Namespace string
	// LeaseDuration is the duration every acquire asks for; no grace.
	LeaseDuration time.Duration
	// OpTimeout bounds one lease call (mutex calls get twice as long, for
	// the client's retries).
	OpTimeout time.Duration
	// ThinkMin and ThinkMax bound the pause between a worker's calls.
	ThinkMin, ThinkMax time.Duration
	// LockWait is how long a mutex worker tries to take a lock.
	LockWait time.Duration
	// HoldMin and HoldMax bound how long a mutex worker keeps a lock.
	HoldMin, HoldMax time.Duration
	// MaxDrift and Margin make the client's safe deadline:
	// sent + duration*(1-MaxDrift) - Margin.
	MaxDrift float64
	Margin   time.Duration
	// Guard fences the registers: "monotonic", or "broken" for the
	// negative control.
	Guard string
	// LockDelay is the lock delay that the mutex workers ask for on the
	// first lock (mutex-0); the others ask for none. 0: no lock delays.
	LockDelay time.Duration
	// StaleWriter makes one mutex worker keep writing with its old token
	// after each holding, ignoring its deadline (negative control).
	StaleWriter bool
	// Locker makes the mutex workers' locks; nil means ClientLocker
	// (client.Mutex).
	Locker LockerFactory
	// Seed seeds the workers' random choices.
	Seed uint64
	// Logf receives progress; nil discards it.
	Logf func(string, ...any)
}

// DefaultConfig returns the workload of a normal run: 10 clients, half of
// them on mutexes, 2s leases.
func DefaultConfig() Config {
	return Config{
		Clients:      10,
		MutexClients: 4,
		// A fifth of the lease: a renewal has four more periods to be
		// retried in before the holding lapses.
		OneShotClients:    2,
		OneShotRenewEvery: 400 * time.Millisecond,
		OneShotRetryDelay: 50 * time.Millisecond,
		OneShotGiveUp:     4 * time.Second,
		// More workers than slots, so that some always wait in the queue.
		SemaphoreClients: 3,
		SemaphoreSlots:   2,
		Leases:           3,
		Locks:            2,
		Namespace:        "jepsen",
		LeaseDuration:    2 * time.Second,
		OpTimeout:        time.Second,
		ThinkMin:         20 * time.Millisecond,
		ThinkMax:         120 * time.Millisecond,
		LockWait:         5 * time.Second,
		HoldMin:          100 * time.Millisecond,
		HoldMax:          3 * time.Second,
		MaxDrift:         0.01,
		Margin:           50 * time.Millisecond,
		Guard:            "monotonic",
		LockDelay:        time.Second,
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return errors.New("workload: Config.Endpoints is empty")
	case c.Clients < 1 || c.MutexClients < 0 || c.MutexClients > c.Clients:
		return fmt.Errorf("workload: need Clients >= 1 and 0 <= MutexClients <= Clients, got %d and %d", c.Clients, c.MutexClients)
	case c.OneShotClients < 0 || (c.OneShotClients > 0 && (c.OneShotRenewEvery <= 0 || c.OneShotRetryDelay < 0 || c.OneShotGiveUp <= 0)):
		return errors.New("workload: need OneShotClients >= 0, and with one-shot clients OneShotRenewEvery > 0, OneShotRetryDelay >= 0 and OneShotGiveUp > 0")
	case c.SemaphoreClients < 0 || (c.SemaphoreClients > 0 && (c.SemaphoreSlots < 1 || c.SemaphoreSlots > 256)):
		return errors.New("workload: need SemaphoreClients >= 0, and with semaphore clients 1 <= SemaphoreSlots <= 256")
	case c.Leases < 1 || c.Locks < 1:
		return errors.New("workload: Config.Leases and Config.Locks must be >= 1")
	case c.LeaseDuration <= 0 || c.OpTimeout <= 0 || c.LockWait <= 0:
		return errors.New("workload: Config.LeaseDuration, OpTimeout and LockWait must be > 0")
	case c.ThinkMax < c.ThinkMin || c.ThinkMin < 0 || c.HoldMax < c.HoldMin || c.HoldMin < 0:
		return errors.New("workload: need 0 <= ThinkMin <= ThinkMax and 0 <= HoldMin <= HoldMax")
	case c.MaxDrift < 0 || c.MaxDrift >= 1 || c.Margin < 0:
		return errors.New("workload: need 0 <= MaxDrift < 1 and Margin >= 0")
	case c.LockDelay < 0:
		return errors.New("workload: Config.LockDelay must not be negative")
	}
	return nil
}

func (c Config) leaseNames() []string {
	var out []string
	for i := 0; i < c.Leases; i++ {
		out = append(out, fmt.Sprintf("lease-%d", i))
	}
	return out
}

func (c Config) lockNames() []string {
	var out []string
	for i := 0; i < c.Locks; i++ {
		out = append(out, fmt.Sprintf("mutex-%d", i))
	}
	return out
}

// LeaseNames returns the lease workload's lease names.
func (c Config) LeaseNames() []string { return c.leaseNames() }

// LockNames returns the mutex workload's lock names.
func (c Config) LockNames() []string { return c.lockNames() }

// lockDelay is the lock delay the mutex workers ask for on lock.
func (c Config) lockDelay(lock string) time.Duration {
	if lock == c.lockNames()[0] {
		return c.LockDelay
	}
	return 0
}

// Workload is a set of workers ready to run.
type Workload struct {
	cfg       Config
	rec       *history.Recorder
	logf      func(string, ...any)
	registers map[string]*Register
	newLocker LockerFactory
	pauses    *pauseQueue

	mu       sync.Mutex // guards clients
	conns    []*grpc.ClientConn
	clients  []*client.Client
	leaseW   []*leaseWorker
	mutexW   []*mutexWorker
	oneShotW []*oneShotWorker
	semW     []*semWorker
	// chains numbers the one-shot holders' renewals.
	chains atomic.Int64
}

// New connects the workers (lazily: no call is made yet).
func New(cfg Config, rec *history.Recorder) (*Workload, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Workload{cfg: cfg, rec: rec, logf: cfg.Logf, registers: map[string]*Register{}, newLocker: cfg.Locker}
	if w.logf == nil {
		w.logf = func(string, ...any) {}
	}
	if w.newLocker == nil {
		w.newLocker = ClientLocker
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	w.pauses = &pauseQueue{rng: rand.New(rand.NewPCG(seed, 99))}
	for _, l := range cfg.lockNames() {
		w.registers[l] = NewRegister(l, NewGuard(cfg.Guard), rec)
	}
	conns, err := dialAll(cfg.Endpoints, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	w.conns = conns
	var stubs []pb.LeasesClient
	for _, cc := range conns {
		stubs = append(stubs, pb.NewLeasesClient(cc))
	}
	nLease := cfg.Clients - cfg.MutexClients
	for i := 0; i < nLease; i++ {
		w.leaseW = append(w.leaseW, &leaseWorker{
			w: w, process: i, holder: fmt.Sprintf("c%d", i),
			rng:   rand.New(rand.NewPCG(seed, uint64(i))),
			conns: stubs, addrs: cfg.Endpoints, cur: i % len(stubs),
			held: map[string]uint64{}, old: map[string]uint64{},
		})
	}
	for i := 0; i < cfg.MutexClients; i++ {
		p := nLease + i
		c, err := w.newClient()
		if err != nil {
			w.Close()
			return nil, err
		}
		w.clients = append(w.clients, c)
		mw := &mutexWorker{
			w: w, process: p, holder: fmt.Sprintf("m%d", p),
			rng:    rand.New(rand.NewPCG(seed, uint64(p))),
			client: c, pause: make(chan time.Duration, 1),
			stale: cfg.StaleWriter && i == 0,
		}
		w.mutexW = append(w.mutexW, mw)
	}
	for i := 0; i < cfg.OneShotClients; i++ {
		p := cfg.Clients + i
		w.oneShotW = append(w.oneShotW, &oneShotWorker{
			w: w, process: p, holder: fmt.Sprintf("o%d", p), lease: oneShotLease(i),
			rng: rand.New(rand.NewPCG(seed, uint64(p))), addrs: cfg.Endpoints, next: i % len(cfg.Endpoints),
		})
	}
	for i := 0; i < cfg.SemaphoreClients; i++ {
		p := cfg.Clients + cfg.OneShotClients + i
		c, err := w.newClient()
		if err != nil {
			w.Close()
			return nil, err
		}
		w.clients = append(w.clients, c)
		w.semW = append(w.semW, &semWorker{
			w: w, process: p, holder: fmt.Sprintf("s%d", p),
			rng: rand.New(rand.NewPCG(seed, uint64(p))), client: c,
		})
	}
	w.pauses.workers = w.mutexW
	return w, nil
}

// newClient makes a Go client for a mutex worker, with the workload's
// deadline parameters.
func (w *Workload) newClient() (*client.Client, error) {
	ccfg := client.DefaultConfig()
	ccfg.Endpoints = w.cfg.Endpoints
	ccfg.DialTimeout = w.cfg.OpTimeout
	ccfg.BackoffBase = 20 * time.Millisecond
	ccfg.BackoffMax = 300 * time.Millisecond
	ccfg.MaxDrift = w.cfg.MaxDrift
	ccfg.Margin = w.cfg.Margin
	// The history ends before the workers' clients close: a release at
	// Close would be a write that no operation records.
	ccfg.AbandonOnClose = true
	return client.New(ccfg)
}

// Run runs every worker until ctx is done and they have all returned.
func (w *Workload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, lw := range w.leaseW {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lw.run(ctx)
		}()
	}
	for _, mw := range w.mutexW {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mw.run(ctx)
		}()
	}
	for _, ow := range w.oneShotW {
		wg.Go(func() { ow.run(ctx) })
	}
	for _, sw := range w.semW {
		wg.Go(func() { sw.run(ctx) })
	}
	wg.Wait()
}

// PauseClient asks a random mutex worker to pause for d the next time it
// is about to write under its lock, and returns its process name. ok is
// false when there is no mutex worker or one is already pending.
func (w *Workload) PauseClient(d time.Duration) (string, bool) {
	p, ok := w.pauses.pause(d)
	return fmt.Sprintf("p%d", p), ok
}

// Close closes every connection.
func (w *Workload) Close() {
	for _, cc := range w.conns {
		cc.Close()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.clients {
		c.Close()
	}
}
