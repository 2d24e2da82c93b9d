package node

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/leasekeeper/leasekeeper/leasing"
)

// Config is what a node needs to run.
type Config struct {
	// ID is the node's Raft server ID, unique in the cluster.
	ID string
	// DataDir holds the Raft log, stable store and snapshots. Empty keeps
	// everything in memory (tests only).
	DataDir string
	// RaftAddr is the address this node's Raft listens on.
	RaftAddr string
	// GRPCAddr is the address this node's gRPC API listens on.
	GRPCAddr string
	// RaftAdvertise and GRPCAdvertise are where the other nodes reach
	// this node, when that is not where it listens: behind a proxy or a
	// NAT, or when it listens on a wildcard address. Empty: the listen
	// address. Only the advertised addresses are ever handed to others: in
	// the Raft configuration (bootstrap, join, a follower's registration
	// with the leader), in the member directory from which followers
	// forward to the leader, and so in the leader hints clients get.
	RaftAdvertise string
	GRPCAdvertise string
	// Bootstrap starts a new cluster of Peers (this node included) when the
	// node has no state yet. Every node of the first cluster may be started
	// with the same Peers; Raft accepts an identical bootstrap on each.
	Bootstrap bool
	Peers     []raft.Server

	// Raft timing; zero values take the defaults below.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// ApplyTimeout bounds how long a proposal may wait to enter the log.
	ApplyTimeout time.Duration
	// BarrierTimeout bounds the new leader's wait for its log to apply.
	BarrierTimeout time.Duration

	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// NoSync turns off fsync of the Raft log. Unsafe; benchmarks only.
	NoSync bool

	Leasing leasing.Config

	// RenewThroughLog commits every renewal through the Raft log. By
	// default the leader confirms a renewal without a log write once a
	// quorum confirmed its leadership after the renewal arrived (a renewal
	// that asks to be recorded always goes through the log).
	RenewThroughLog bool

	// NoCrashProbe keeps a follower waiting out the whole heartbeat
	// timeout even when its leader's Raft port refuses connections. By
	// default a follower whose leader has been silent for
	// LeaderLeaseTimeout and whose port refuses stands for election at
	// once.
	NoCrashProbe bool

	// Fault breaks one safety rule on purpose, so the chaos suite can show
	// that its checkers catch a real bug. Never set it in production.
	Fault Fault
}

// Fault names a safety rule that a node breaks on purpose (testing only).
type Fault string

// The faults a node can inject.
const (
	// FaultNone: no fault.
	FaultNone Fault = ""
	// FaultNoFreshDuration: a new leader expires every holding at once
	// instead of giving it a full fresh duration.
	FaultNoFreshDuration Fault = "no-fresh-duration"
	// FaultEarlyExpiry: the leader expires holdings after half their
	// duration.
	FaultEarlyExpiry Fault = "early-expiry"
	// FaultReuseTokens: a lease's fencing token is its own transition
	// count, so deleting and re-creating it reissues old tokens.
	FaultReuseTokens Fault = "reuse-tokens"
	// FaultNoConfirm: the leader renews holdings without a log write and
	// without confirming its leadership, so a deposed leader that has not
	// noticed yet keeps acknowledging renewals.
	FaultNoConfirm Fault = "no-confirm"
	// FaultIgnoreExpireDoubt: the leader renews a holding without a log
	// write even while an Expire of it that timed out may still commit,
	// so that Expire can end a holding whose renewal was acknowledged
	// (leasing.Config.UnsafeIgnoreDoubt).
	FaultIgnoreExpireDoubt Fault = "ignore-expire-doubt"
	// FaultSkipLockDelay: the leader's Expire starts no lock delay, so a
	// lease whose holder failed goes to the next holder at once.
	FaultSkipLockDelay Fault = "skip-lock-delay"
)

// ParseFault checks a fault name.
func ParseFault(s string) (Fault, error) {
	switch f := Fault(s); f {
	case FaultNone, FaultNoFreshDuration, FaultEarlyExpiry, FaultReuseTokens, FaultNoConfirm, FaultIgnoreExpireDoubt, FaultSkipLockDelay:
		return f, nil
	}
	return "", fmt.Errorf("node: unknown fault %q (want %s, %s, %s, %s, %s or %s)", s, FaultNoFreshDuration, FaultEarlyExpiry, FaultReuseTokens, FaultNoConfirm, FaultIgnoreExpireDoubt, FaultSkipLockDelay)
}

// DefaultConfig returns the defaults for a node on a LAN.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		ApplyTimeout:       5 * time.Second,
		BarrierTimeout:     10 * time.Second,
		SnapshotThreshold:  16384,
		SnapshotInterval:   60 * time.Second,
		TrailingLogs:       10240,
		Leasing:            leasing.DefaultConfig(),
	}
}

// Validate checks the configuration and names the field at fault.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("node: ID is required"))
	}
	if c.RaftAddr == "" {
		errs = append(errs, errors.New("node: RaftAddr is required"))
	}
	for _, a := range []struct{ name, v string }{{"RaftAdvertise", c.RaftAdvertise}, {"GRPCAdvertise", c.GRPCAdvertise}} {
		if a.v != "" {
			if err := checkAdvertised(a.v); err != nil {
				errs = append(errs, fmt.Errorf("node: %s %q: %w", a.name, a.v, err))
			}
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("node: LeaderLeaseTimeout (%v) must not exceed HeartbeatTimeout (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("node: ElectionTimeout (%v) must be at least HeartbeatTimeout (%v)", c.ElectionTimeout, c.HeartbeatTimeout))
	}
	if c.ApplyTimeout <= 0 || c.BarrierTimeout <= 0 {
		errs = append(errs, errors.New("node: ApplyTimeout and BarrierTimeout must be > 0"))
	}
	if c.Bootstrap {
		self := false
		for _, p := range c.Peers {
			if string(p.ID) == c.ID {
				self = true
				// A follower registers its advertised address with the
				// leader, which would replace this one: the two must agree.
				if c.RaftAdvertise != "" && string(p.Address) != c.RaftAdvertise {
					errs = append(errs, fmt.Errorf("node: Peers gives this node (%s) the Raft address %s, but RaftAdvertise is %s", c.ID, p.Address, c.RaftAdvertise))
				}
			}
		}
		if len(c.Peers) > 0 && !self {
			errs = append(errs, fmt.Errorf("node: Peers must include this node (%s)", c.ID))
		}
	}
	if err := c.Leasing.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// AdvertisedRaft is the Raft address this node gives the others.
func (c Config) AdvertisedRaft() string {
	if c.RaftAdvertise != "" {
		return c.RaftAdvertise
	}
	return c.RaftAddr
}

// AdvertisedGRPC is the gRPC address this node gives the others.
func (c Config) AdvertisedGRPC() string {
	if c.GRPCAdvertise != "" {
		return c.GRPCAdvertise
	}
	return c.GRPCAddr
}

// checkAdvertised refuses an address another node cannot dial: no port,
// or a wildcard host.
func checkAdvertised(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("port %q is not in [1, 65535]", port)
	}
	if host == "" {
		return errors.New("no host: others cannot dial it")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return errors.New("a wildcard address: others cannot dial it")
	}
	return nil
}

// ParsePeers parses "id=raftaddr,id=raftaddr".
func ParsePeers(s string) ([]raft.Server, error) {
	var out []raft.Server
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("node: peer %q is not id=raftaddr", part)
		}
		if seen[id] {
			return nil, fmt.Errorf("node: peer id %q given twice", id)
		}
		seen[id] = true
		out = append(out, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	return out, nil
}
