package client

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"
)

// Defaults for holdings made without options. They equal TestProfile's
// duration, grace and retry; the renewal interval comes from
// Config.RenewFraction.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultGracePeriod   = 5 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	DefaultNamespace     = "default"
)

// Profile is a consistent set of timings for one kind of environment. Pick
// one with ProductionProfile, TestProfile or DevelopmentProfile (or
// ProfileByName), change any field, and pass it with WithProfile or
// ElectorConfigFromProfile.
type Profile struct {
	// Name is the profile's name, for logs.
	Name string
	// LeaseDuration is how long a holding lasts without a renewal.
	LeaseDuration time.Duration
	// RenewFraction is how far into LeaseDuration a holding is renewed.
	RenewFraction float64
	// RetryPeriod is how long a waiter waits between attempts: a
	// Semaphore waiter of a cluster without semaphore queues when no
	// watch event wakes it first, a
	// LeaderElector candidate while another leads, a Heartbeat whose
	// acquire failed, a Mutex.Lock whose call found no node (a Lock in the
	// server's queue long-polls instead).
	RetryPeriod time.Duration
	// GracePeriod is the extra time that the server waits after
	// LeaseDuration before it expires a holding.
	GracePeriod time.Duration
}

// ProductionProfile favours stability: a holding survives a leader election
// and several lost renewals. A crashed holder blocks others for up to
// 45 s (duration plus grace).
func ProductionProfile() Profile {
	return Profile{Name: "production", LeaseDuration: 30 * time.Second, RenewFraction: 1.0 / 4, RetryPeriod: 5 * time.Second, GracePeriod: 15 * time.Second}
}

// TestProfile is for test and staging clusters: faster takeover (20 s at
// most after a crash), still tolerant of a slow election.
func TestProfile() Profile {
	return Profile{Name: "test", LeaseDuration: 15 * time.Second, RenewFraction: 1.0 / 3, RetryPeriod: 2 * time.Second, GracePeriod: 5 * time.Second}
}

// DevelopmentProfile is for laptops and debuggers: long durations so that a
// paused process keeps its leases, few renewals.
func DevelopmentProfile() Profile {
	return Profile{Name: "development", LeaseDuration: 60 * time.Second, RenewFraction: 1.0 / 2, RetryPeriod: 10 * time.Second, GracePeriod: 30 * time.Second}
}

// ProfileByName returns the profile called production, test or development.
func ProfileByName(name string) (Profile, error) {
	switch strings.ToLower(name) {
	case "production", "prod":
		return ProductionProfile(), nil
	case "test":
		return TestProfile(), nil
	case "development", "dev":
		return DevelopmentProfile(), nil
	}
	return Profile{}, fmt.Errorf("client: unknown profile %q: want production, test or development", name)
}

// RenewInterval is LeaseDuration * RenewFraction.
func (p Profile) RenewInterval() time.Duration {
	return time.Duration(float64(p.LeaseDuration) * p.RenewFraction)
}

// Validate reports the first problem with p, naming the field.
func (p Profile) Validate() error {
	switch {
	case p.LeaseDuration <= 0:
		return fmt.Errorf("client: Profile.LeaseDuration must be positive, got %v", p.LeaseDuration)
	case !(p.RenewFraction > 0 && p.RenewFraction < 1):
		return fmt.Errorf("client: Profile.RenewFraction must be in (0, 1), got %v", p.RenewFraction)
	case p.RetryPeriod <= 0:
		return fmt.Errorf("client: Profile.RetryPeriod must be positive, got %v", p.RetryPeriod)
	case p.GracePeriod < 0:
		return fmt.Errorf("client: Profile.GracePeriod must not be negative, got %v", p.GracePeriod)
	}
	return nil
}

// Option changes how a holding is taken and kept: by Hold, NewMutex,
// NewLocker, NewElection, NewSemaphore and NewHeartbeat. Later options
// override earlier ones, so WithProfile(p) followed by WithTTL(d) keeps p's
// other timings.
//
// The constructors check their options and the lease's name when they are
// called, without any call to the cluster, and return an error wrapping
// ErrInvalid that names the bad option: a malformed name or namespace, a
// non-positive duration, a renewal interval that would not come before the
// holding's local deadline (Config.MaxDrift, Config.Margin), an invalid
// label, an option that the constructor does not use. What only the server
// knows (its limits on durations, the lock delay, label counts it allows)
// is checked when the holding is taken.
type Option func(*options)

// optKind names one Option function, so that a constructor can refuse one
// that it would not use instead of ignoring it.
type optKind uint16

const (
	optNamespace optKind = 1 << iota
	optIdentity
	optTTL
	optGrace
	optLabels
	optLockDelay
	optRenewInterval
	optRecordedRenewals
	optRetryPeriod
	optProfile
)

var optNames = []struct {
	k    optKind
	name string
}{
	{optNamespace, "WithNamespace"},
	{optIdentity, "WithIdentity"},
	{optTTL, "WithTTL"},
	{optGrace, "WithGrace"},
	{optLabels, "WithLabels"},
	{optLockDelay, "WithLockDelay"},
	{optRenewInterval, "WithRenewInterval"},
	{optRecordedRenewals, "WithRecordedRenewals"},
	{optRetryPeriod, "WithRetryPeriod"},
	{optProfile, "WithProfile"},
}

type options struct {
	namespace  string
	identity   string
	duration   time.Duration
	grace      time.Duration
	labels     map[string]string
	renewEvery time.Duration // 0: duration * renewFraction
	// renewFraction is a profile's; 0 means Config.RenewFraction.
	renewFraction float64
	retryPeriod   time.Duration
	// maxValid caps the local deadline at sent + maxValid (the
	// LeaderElector's RenewDeadline); 0 means no cap.
	maxValid time.Duration
	// wait queues the acquire behind the current holder (Mutex.Lock).
	wait bool
	// slots, when non-zero, makes the acquire a semaphore's: the name is
	// the semaphore's, and the holding is of one of its slots.
	slots int
	// record sends every renewal through the server's log.
	record bool
	// retrying marks a caller that tries again after an acquire whose
	// outcome is unknown (Mutex.Lock, a LeaderElector, a Heartbeat): hold
	// leaves the cleanup to it unless ctx has ended.
	retrying bool
	// lockDelay is asked of the server with every acquire (0: none).
	lockDelay time.Duration

	// given records which Option functions were passed.
	given optKind
	// profileErr is the first invalid profile given with WithProfile.
	profileErr error
}

func defaultOptions() options {
	return options{
		namespace:   DefaultNamespace,
		duration:    DefaultLeaseDuration,
		grace:       DefaultGracePeriod,
		retryPeriod: DefaultRetryPeriod,
	}
}

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, f := range opts {
		if f == nil {
			continue
		}
		f(&o)
	}
	return o
}

// refuse returns an error naming the first option given that is not in
// allowed; ctor names the constructor and why is said after the option.
func (o options) refuse(ctor string, allowed optKind, why string) error {
	for _, n := range optNames {
		if o.given&n.k != 0 && allowed&n.k == 0 {
			return invalidf("%s: %s does not apply: %s", ctor, n.name, why)
		}
	}
	return nil
}

// validate is check as an error matching ErrInvalid.
func (o options) validate() error {
	if err := o.check(); err != nil {
		return invalidf("%v", err)
	}
	return nil
}

// check checks what needs no server and no client: each message names
// the option that set the bad value.
func (o options) check() error {
	if o.profileErr != nil {
		return fmt.Errorf("WithProfile: %v", strings.TrimPrefix(o.profileErr.Error(), "client: "))
	}
	if err := validateNamespace(o.namespace); err != nil {
		return fmt.Errorf("WithNamespace: %v", err)
	}
	if o.identity != "" || o.given&optIdentity != 0 {
		if err := validateHolder(o.identity); err != nil {
			return fmt.Errorf("WithIdentity: %v", err)
		}
	}
	if err := validateLabels(o.labels); err != nil {
		return fmt.Errorf("WithLabels: %v", err)
	}
	switch {
	case o.duration <= 0:
		return fmt.Errorf("WithTTL: lease duration must be positive, got %v", o.duration)
	case o.grace < 0:
		return fmt.Errorf("WithGrace: grace period must not be negative, got %v", o.grace)
	case o.lockDelay < 0:
		return fmt.Errorf("WithLockDelay: lock delay must not be negative, got %v", o.lockDelay)
	case o.renewEvery < 0:
		return fmt.Errorf("WithRenewInterval: renew interval must not be negative, got %v", o.renewEvery)
	case o.renewFraction < 0 || o.renewFraction >= 1:
		return fmt.Errorf("WithProfile: renew fraction must be in (0, 1), got %v", o.renewFraction)
	case o.retryPeriod <= 0:
		return fmt.Errorf("WithRetryPeriod: retry period must be positive, got %v", o.retryPeriod)
	}
	return nil
}

// WithNamespace sets the lease's namespace (default "default"): a DNS-1123
// label, as the server requires.
func WithNamespace(ns string) Option {
	return func(o *options) { o.namespace = ns; o.given |= optNamespace }
}

// WithIdentity sets the holder identity. Without it every Mutex, Heartbeat
// or LeaderElector makes a unique one (host-pid-random), because the server
// treats an acquire by the current holder as a renewal: two Mutexes sharing
// an identity would both believe they hold the lock. An identity is 1 to
// 253 bytes of printable characters.
func WithIdentity(id string) Option {
	return func(o *options) { o.identity = id; o.given |= optIdentity }
}

// WithTTL sets the lease duration: how long a holding lasts without a
// renewal.
func WithTTL(d time.Duration) Option {
	return func(o *options) { o.duration = d; o.given |= optTTL }
}

// WithGrace sets the grace period that the server adds to the duration
// before it expires a holding. The client's own deadline never includes it.
func WithGrace(d time.Duration) Option {
	return func(o *options) { o.grace = d; o.given |= optGrace }
}

// WithLabels sets labels on the lease when a new holding begins (at most
// 64, Kubernetes-style keys and values).
func WithLabels(labels map[string]string) Option {
	return func(o *options) { o.labels = labels; o.given |= optLabels }
}

// WithLockDelay asks for a lock delay (Consul's and Chubby's lock-delay):
// if this holder's holding ends by expiry, because it stopped renewing,
// rather than by Unlock or Release, the server keeps the lease from
// everyone, waiters included, for d after it expired the holding, so that
// work the lost holder still has in flight drains before the next holder
// starts. An Unlock hands the lease on at once. The server bounds d
// (lease-node --max-lock-delay, 1 minute by default) and refuses a larger
// one with ErrInvalid when the holding is taken; a negative d is refused
// at construction. 0, the default, asks for none.
func WithLockDelay(d time.Duration) Option {
	return func(o *options) { o.lockDelay = d; o.given |= optLockDelay }
}

// WithRenewInterval sets how often the renewal engine renews the holding,
// instead of a fraction of the duration (Config.RenewFraction, or a
// profile's).
func WithRenewInterval(d time.Duration) Option {
	return func(o *options) { o.renewEvery = d; o.given |= optRenewInterval }
}

// WithRecordedRenewals makes every renewal of the holding go through the
// cluster's log, so the lease's renewTime moves and watchers see a RENEWED
// event (a Heartbeat does this for its Monitor). Without it the leader may
// confirm renewals without a log write, which is several times cheaper and
// extends the holding just the same.
func WithRecordedRenewals() Option {
	return func(o *options) { o.record = true; o.given |= optRecordedRenewals }
}

// WithRetryPeriod sets the time between attempts of a waiter (see
// Profile.RetryPeriod).
func WithRetryPeriod(d time.Duration) Option {
	return func(o *options) { o.retryPeriod = d; o.given |= optRetryPeriod }
}

// WithProfile sets the duration, grace, renewal fraction and retry period
// from p. The renewal stays a fraction of the duration, so a later WithTTL
// keeps p's proportions. An invalid p (see Profile.Validate) is refused at
// construction.
func WithProfile(p Profile) Option {
	return func(o *options) {
		o.duration = p.LeaseDuration
		o.grace = p.GracePeriod
		o.renewEvery = 0
		o.renewFraction = p.RenewFraction
		o.retryPeriod = p.RetryPeriod
		o.given |= optProfile
		if err := p.Validate(); err != nil && o.profileErr == nil {
			o.profileErr = err
		}
	}
}

// NewIdentity returns a holder identity that is unique with overwhelming
// probability: host-pid-random.
func NewIdentity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
