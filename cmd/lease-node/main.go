// Command lease-node runs one leasekeeper server: a member of a Raft cluster
// that replicates the lease table and serves the gRPC API.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/buildinfo"
	"github.com/leasekeeper/leasekeeper/internal/sdnotify"
	"github.com/leasekeeper/leasekeeper/k8sapi"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/transport"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	// unknownEnv lists the LEASE_NODE_* variables that name no setting
	// (a misspelt one would otherwise be ignored without a word).
	unknownEnv []string
	sec        securityFlags
	k8sAPIAddr string
	node       node.Config
	server     transport.Config
	httpAddr   string
	pprof      bool
	peers      string
	join       string
	logLevel   string
	logJSON    bool
	clockRate  float64
	memLimit   string
	memBytes   int64 // parsed memLimit; 0: leave the runtime's setting
	gcFloor    string
	gcBytes    int64 // parsed gcFloor
	fault      string
	restore    string
	// restoreTokenFloor: with restore, new fencing tokens start above it.
	restoreTokenFloor uint64
}

// envPrefix: every flag may also be set as LEASE_NODE_<FLAG> (upper case,
// '-' as '_'); a flag on the command line wins.
const envPrefix = "LEASE_NODE_"

// errPrinted: --print-config or --version printed what was asked; exit 0.
var errPrinted = errors.New("configuration printed")

func parse(args []string, stdout, stderr io.Writer) (*options, error) {
	o := &options{node: node.DefaultConfig(), server: transport.DefaultConfig()}
	fs := flag.NewFlagSet("lease-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.node.ID, "id", "", "this node's unique ID in the cluster (required)")
	fs.StringVar(&o.node.DataDir, "data-dir", "", "directory for the Raft log and snapshots (default ./data/<id>)")
	fs.StringVar(&o.node.GRPCAddr, "grpc-addr", "127.0.0.1:7001", "client gRPC API address")
	fs.StringVar(&o.node.RaftAddr, "raft-addr", "127.0.0.1:8001", "Raft address, reached by the other nodes")
	fs.StringVar(&o.node.GRPCAdvertise, "grpc-advertise", "", "gRPC address the other nodes and clients are told to reach this node at, when not --grpc-addr (behind a proxy or NAT, or --grpc-addr on a wildcard); it goes into the member directory and leader hints")
	fs.StringVar(&o.node.RaftAdvertise, "raft-advertise", "", "Raft address the other nodes are told to reach this node at, when not --raft-addr (behind a proxy or NAT, or --raft-addr on a wildcard); it goes into the Raft configuration on join and registration")
	fs.StringVar(&o.httpAddr, "http-addr", "", "address for /metrics, /healthz and /readyz (empty: off)")
	fs.BoolVar(&o.pprof, "enable-pprof", false, "serve Go's profiler at /debug/pprof/ on --http-addr (heap and goroutine dumps: keep that address private)")
	fs.BoolVar(&o.server.Reflection, "grpc-reflection", o.server.Reflection, "serve gRPC server reflection on --grpc-addr, so grpcurl lists and calls the API without the .proto files (--grpc-reflection=false: off)")
	fs.StringVar(&o.k8sAPIAddr, "k8s-api-addr", "", "address for the Kubernetes Lease API (coordination.k8s.io/v1) over HTTP, for kubectl and client-go (empty: off)")
	fs.BoolVar(&o.node.Bootstrap, "bootstrap", false, "start a new cluster of --peers if this node has no state")
	fs.StringVar(&o.peers, "peers", "", "initial cluster for --bootstrap: id=raftaddr,id=raftaddr,...")
	fs.StringVar(&o.join, "join", "", "gRPC address(es) of a running cluster to join, comma separated")
	fs.StringVar(&o.restore, "restore", "", "seed a new single-node cluster (with --bootstrap, empty data dir) from a backup file made by 'leasectl snapshot save'")
	fs.Uint64Var(&o.restoreTokenFloor, "restore-token-floor", 0, "with --restore: issue new fencing tokens above this one, e.g. the highest token a fenced resource has seen (they start 2^40 above the backup's in any case)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&o.logJSON, "log-json", false, "log JSON lines instead of text")
	fs.DurationVar(&o.node.HeartbeatTimeout, "heartbeat-timeout", o.node.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&o.node.ElectionTimeout, "election-timeout", o.node.ElectionTimeout, "Raft election timeout")
	fs.DurationVar(&o.node.LeaderLeaseTimeout, "leader-lease-timeout", o.node.LeaderLeaseTimeout, "Raft leader lease timeout")
	fs.Uint64Var(&o.node.SnapshotThreshold, "snapshot-threshold", o.node.SnapshotThreshold, "log entries between automatic snapshots")
	fs.DurationVar(&o.node.SnapshotInterval, "snapshot-interval", o.node.SnapshotInterval, "how often to check whether to snapshot")
	fs.BoolVar(&o.node.RenewThroughLog, "renew-through-log", false, "commit every renewal through the Raft log (default: the leader confirms a renewal without a log write after a quorum confirms its leadership)")
	fs.BoolVar(&o.node.NoCrashProbe, "no-crash-probe", false, "wait out the whole heartbeat timeout even when the silent leader's Raft port refuses connections (default: stand for election at once)")
	fs.BoolVar(&o.node.NoSync, "unsafe-no-fsync", false, "do not fsync the Raft log (loses acknowledged writes on power loss; benchmarks only)")
	fs.IntVar(&o.server.MaxWatches, "max-watches", o.server.MaxWatches, "most watches the node holds open (0: no limit); one more is refused with ResourceExhausted")
	fs.IntVar(&o.server.MaxWatchesPerIdentity, "max-watches-per-identity", o.server.MaxWatchesPerIdentity, "most watches one authenticated caller holds open on the node (0: no limit)")
	fs.DurationVar(&o.server.DefaultLeaseDuration, "default-lease-duration", o.server.DefaultLeaseDuration, "duration of an acquire that names none (0: required)")
	fs.DurationVar(&o.server.DefaultGracePeriod, "default-grace-period", o.server.DefaultGracePeriod, "grace period of an acquire that names none")
	fs.DurationVar(&o.server.MinLeaseDuration, "min-lease-duration", o.server.MinLeaseDuration, "shortest lease duration accepted")
	fs.DurationVar(&o.server.MaxLeaseDuration, "max-lease-duration", o.server.MaxLeaseDuration, "longest lease duration accepted")
	fs.DurationVar(&o.server.MaxWriteLeaseDuration, "max-write-lease-duration", o.server.MaxWriteLeaseDuration, "longest lease duration a whole-object write (the Kubernetes Lease API) may set (default: any leaseDurationSeconds Kubernetes accepts)")
	fs.DurationVar(&o.server.MaxGracePeriod, "max-grace-period", o.server.MaxGracePeriod, "longest grace period accepted")
	fs.DurationVar(&o.server.MaxLockDelay, "max-lock-delay", o.server.MaxLockDelay, "longest lock delay an acquirer may ask for (a lease whose holder expired stays unavailable that long)")
	fs.IntVar(&o.server.MaxWaiters, "max-waiters", o.server.MaxWaiters, "longest wait queue of one lease; a wait past it fails with ResourceExhausted (0: no limit)")
	fs.IntVar(&o.node.Leasing.ExpiryBatchSize, "expiry-batch-size", o.node.Leasing.ExpiryBatchSize, "most leases expired by one Raft entry")
	fs.Float64Var(&o.node.Leasing.MaxExpiryRate, "max-expiry-rate", o.node.Leasing.MaxExpiryRate, "most leases expired per second (0: no cap)")
	fs.DurationVar(&o.node.Leasing.ProposeTimeout, "expiry-propose-timeout", o.node.Leasing.ProposeTimeout, "how long the leader waits for one Expire proposal before it retries; a holding whose Expire timed out renews through the Raft log until a logged renewal voids that Expire")
	fs.StringVar(&o.sec.cert, "tls-cert", "", "PEM certificate of this node (enables TLS on the gRPC API)")
	fs.StringVar(&o.sec.key, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&o.sec.ca, "tls-ca", "", "PEM CA bundle that verifies client and peer certificates")
	fs.StringVar(&o.sec.tlsServerName, "tls-server-name", "", "name to expect in other nodes' certificates when forwarding (default: their address)")
	fs.BoolVar(&o.sec.raftTLS, "raft-tls", false, "run Raft over mutual TLS with --tls-cert; peers must be in the leasekeeper:nodes group")
	fs.StringVar(&o.sec.authMode, "auth-mode", auth.ModeNone, "authentication: "+strings.Join(auth.Modes, ", "))
	fs.StringVar(&o.sec.policyFile, "auth-policy-file", "", "RBAC policy (YAML), reloaded on SIGHUP")
	fs.StringVar(&o.sec.tokenFile, "auth-token-file", "", "bearer tokens, stored hashed (YAML), reloaded on SIGHUP")
	fs.StringVar(&o.sec.nodeTokenFile, "node-token-file", "", "this node's own bearer token, for forwarding in token mode")
	fs.BoolVar(&o.sec.insecure, "insecure", false, "accept serving plain text where the profile asks for TLS")
	fs.StringVar(&o.gcFloor, "gc-heap-floor", "0", "let the heap grow to this size before the collector runs, however little is live: less collector CPU for more memory (0: GOGC alone decides; ignored when GOGC is set)")
	fs.StringVar(&o.memLimit, "memory-limit", "", "soft memory limit of the Go runtime, e.g. 900MiB; the collector works harder near it, so the heap's headroom shrinks instead of doubling a large table (default: GOMEMLIMIT, or none)")
	fs.Float64Var(&o.clockRate, "clock-rate", 1, "testing: run this node's clock at this rate (1.01 = 1% fast)")
	fs.StringVar(&o.fault, "unsafe-test-fault", "", "testing only: break a safety rule on purpose (no-fresh-duration, early-expiry, reuse-tokens, no-confirm, ignore-expire-doubt, skip-lock-delay)")
	var configPath, profile string
	var print, version bool
	fs.StringVar(&configPath, "config", "", "YAML config file; keys are flag names (flags > LEASE_NODE_* env > file > profile > defaults)")
	fs.StringVar(&profile, "profile", "", "preset lease defaults and limits: production, test or development")
	fs.BoolVar(&print, "print-config", false, "print the effective configuration and exit")
	fs.BoolVar(&version, "version", false, "print the version of this binary and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if version {
		printVersion(stdout)
		return nil, errPrinted
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = "flag" })
	if err := layer(fs, set, envValues(fs), "environment"); err != nil {
		return nil, err
	}
	o.unknownEnv = unknownEnv(fs, os.Environ())
	if configPath != "" {
		vals, err := fileValues(configPath)
		if err != nil {
			return nil, err
		}
		if err := layer(fs, set, vals, "config file "+configPath); err != nil {
			return nil, err
		}
	}
	if profile != "" {
		vals, ok := profiles[profile]
		if !ok {
			return nil, fmt.Errorf("--profile %q: want production, test or development", profile)
		}
		if err := layer(fs, set, vals, "profile "+profile); err != nil {
			return nil, err
		}
	}
	if print {
		printConfig(stdout, fs, set)
		return nil, errPrinted
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.node.ID == "" {
		return nil, errors.New("--id is required")
	}
	if o.node.DataDir == "" {
		o.node.DataDir = "data/" + o.node.ID
	}
	peers, err := node.ParsePeers(o.peers)
	if err != nil {
		return nil, err
	}
	o.node.Peers = peers
	if o.memBytes, err = parseBytes(o.memLimit); err != nil {
		return nil, fmt.Errorf("--memory-limit: %w", err)
	}
	if o.gcBytes, err = parseBytes(o.gcFloor); err != nil {
		return nil, fmt.Errorf("--gc-heap-floor: %w", err)
	}
	if o.node.Fault, err = node.ParseFault(o.fault); err != nil {
		return nil, err
	}
	o.sec.requireSecured = profile == "production"
	if err := o.sec.check(); err != nil {
		return nil, err
	}
	if o.k8sAPIAddr != "" && (o.sec.authMode == auth.ModeMTLS || o.sec.authMode == auth.ModeMTLSToken) {
		return nil, fmt.Errorf("--k8s-api-addr cannot pass client certificates through to --auth-mode %s; use --auth-mode token (bearer tokens pass through) or no auth", o.sec.authMode)
	}
	if o.join != "" && o.node.Bootstrap {
		return nil, errors.New("--join and --bootstrap exclude each other")
	}
	if o.restore != "" {
		if err := checkRestore(o); err != nil {
			return nil, err
		}
	} else if o.restoreTokenFloor != 0 {
		return nil, errors.New("--restore-token-floor needs --restore")
	}
	if err := o.node.Validate(); err != nil {
		return nil, err
	}
	// Forwarded calls and keepalive are sized from the Raft timings.
	o.server.HeartbeatTimeout, o.server.ElectionTimeout = o.node.HeartbeatTimeout, o.node.ElectionTimeout
	return o, o.server.Validate()
}

// printVersion writes the build and the formats it reads: an operator
// planning an upgrade compares them between binaries.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "lease-node %s\nraft command version %d, snapshot format %d\n",
		buildinfo.Get(), fsm.CommandVersion, fsm.SnapshotFormat)
}

// parseBytes reads a size such as 900MiB, 1GiB, 512MB or 1048576 (bytes);
// "" is 0.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mult := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("want a size such as 900MiB or 1GiB, got %q", s)
	}
	return n * mult, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errPrinted) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "lease-node: %v\n", err)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "lease-node",
		Level:      hclog.LevelFromString(o.logLevel),
		JSONFormat: o.logJSON,
		Output:     stderr,
	}).With("id", o.node.ID)
	for _, name := range o.unknownEnv {
		log.Warn("ignoring an environment variable that names no setting", "variable", name)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o, log); err != nil {
		log.Error("exiting", "error", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options, log hclog.Logger) error {
	if o.memBytes > 0 {
		debug.SetMemoryLimit(o.memBytes)
		log.Info("soft memory limit set", "bytes", o.memBytes)
	}
	var clk clock.Clock = clock.New()
	if o.clockRate != 1 {
		sk, err := clock.NewSkewed(clk, o.clockRate)
		if err != nil {
			return err
		}
		clk = sk
		log.Warn("clock skewed for testing", "rate", o.clockRate)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	sec, err := o.sec.build(log, reg)
	if err != nil {
		return err
	}
	for _, w := range o.sec.warnings(o.node.GRPCAddr, o.node.RaftAddr) {
		log.Warn(w)
	}
	defer sec.close()
	deps := node.Deps{Clock: clk, Logger: log, Registerer: reg}
	if o.sec.raftTLS {
		if deps.Transport, err = sec.raftTransport(o.node.RaftAddr, o.node.AdvertisedRaft(), log); err != nil {
			return err
		}
	}
	o.server.Creds, o.server.DialOptions, o.server.Auth = sec.creds, sec.dial, sec.authn

	lis, err := net.Listen("tcp", o.node.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	hub := transport.NewHub(o.server.WatchWindow, o.server.WatchBuffer)
	deps.Listeners = []fsm.Listener{hub}
	n, err := node.New(o.node, deps)
	if err != nil {
		_ = lis.Close()
		return err
	}
	met, err := transport.NewMetrics(reg)
	if err != nil {
		_ = n.Close()
		_ = lis.Close()
		return err
	}
	srv, err := transport.New(o.server, n, hub, log, met)
	if err != nil {
		_ = n.Close()
		_ = lis.Close()
		return err
	}
	n.SetPeers(srv)
	g := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(g)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(4)
	go func() {
		defer wg.Done()
		errc <- n.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		tuneGC(ctx, uint64(o.gcBytes))
	}()
	go func() {
		defer wg.Done()
		srv.Run(ctx)
	}()
	// A node restoring a backup serves no client until the backup is in
	// place: a write answered before would be replaced by it.
	restored := make(chan struct{})
	if o.restore == "" {
		close(restored)
	}
	go func() {
		defer wg.Done()
		select {
		case <-restored:
		case <-ctx.Done():
			_ = lis.Close()
			return
		}
		// The listener is bound and calls are taken from here on: a
		// systemd unit of Type=notify counts as started now.
		notify(log, sdnotify.Ready+"\n"+sdnotify.Status("serving gRPC on "+o.node.GRPCAddr))
		if err := g.Serve(lis); err != nil {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	var hs *http.Server
	if o.httpAddr != "" {
		if o.pprof {
			log.Warn("the Go profiler is served on the HTTP address: anyone who reaches it can read heap and goroutine dumps", "http", o.httpAddr)
		}
		if hs, err = startHTTP(o.httpAddr, o.pprof, n, reg, log); err != nil {
			errc <- err
		}
	}
	var ks *http.Server
	var kconn *grpc.ClientConn
	if o.k8sAPIAddr != "" {
		// The Kubernetes API talks to this node's own gRPC API, so its
		// requests are forwarded, authorized and validated like any other.
		// It uses the node's TLS credentials but never the node's token:
		// HTTP callers must not act as the node.
		if ks, kconn, err = startK8sAPI(o.k8sAPIAddr, o.node.GRPCAddr, sec.k8sDial(o.sec.tlsServerName), sec.serverTLS, log); err != nil {
			errc <- err
		}
	}
	log.Info("serving", "version", buildinfo.Get().Version, "grpc", o.node.GRPCAddr, "raft", o.node.RaftAddr,
		"grpc_advertised", o.node.AdvertisedGRPC(), "raft_advertised", o.node.AdvertisedRaft(), "http", o.httpAddr, "data_dir", o.node.DataDir,
		"tls", sec.tlsEnabled, "raft_tls", o.sec.raftTLS, "auth", o.sec.authMode)
	if o.restore != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := restore(ctx, o.restore, o.restoreTokenFloor, n, log); err != nil {
				if ctx.Err() == nil {
					errc <- err
				}
				return
			}
			close(restored)
		}()
	}
	if o.join != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := join(ctx, o, n, sec.dial, log); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			break wait
		case runErr = <-errc:
			break wait
		case <-hup:
			sec.reload(log)
		}
	}
	notify(log, sdnotify.Stopping)
	cancel()
	if ks != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		if ks.Shutdown(sctx) != nil {
			_ = ks.Close() // watches never end by themselves
		}
		scancel()
		_ = kconn.Close()
	}
	srv.Drain() // Calls streams end once answered; GracefulStop would wait for them
	stopGRPC(g, 5*time.Second)
	wg.Wait()
	_ = srv.Close()
	if hs != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = hs.Shutdown(sctx)
	}
	return runErr
}

// notify tells the service manager (systemd's $NOTIFY_SOCKET) state; a
// node started without one sends nothing.
func notify(log hclog.Logger, state string) {
	if sent, err := sdnotify.Notify(state); err != nil {
		log.Warn("cannot notify the service manager", "error", err)
	} else if sent {
		log.Debug("notified the service manager", "state", state)
	}
}

// stopGRPC lets in-flight calls finish for up to d, then cuts the rest
// (watch streams never finish by themselves).
func stopGRPC(g *grpc.Server, d time.Duration) {
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		g.Stop()
		<-done
	}
}

// join asks a running cluster to add this node, until it is a member.
// dial are the node's own dial options (its TLS credentials and token), so
// a node joins a secured cluster as a node.
func join(ctx context.Context, o *options, n *node.Node, dial []grpc.DialOption, log hclog.Logger) error {
	if st, err := n.Status(); err == nil {
		for _, m := range st.Members {
			if m.ID == o.node.ID && m.GRPCAddr == o.node.AdvertisedGRPC() && m.RaftAddr == o.node.AdvertisedRaft() {
				return nil // already a member from an earlier run
			}
		}
	}
	targets := strings.Split(o.join, ",")
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		target := strings.TrimSpace(targets[attempt%len(targets)])
		err := joinOnce(ctx, target, o, dial)
		if err == nil {
			log.Info("joined the cluster", "via", target)
			return nil
		}
		log.Warn("join failed, retrying", "via", target, "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 3*time.Second)
	}
}

func joinOnce(ctx context.Context, target string, o *options, dial []grpc.DialOption) error {
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pb.NewClusterClient(conn).Join(ctx, joinRequest(o))
	return err
}

// joinRequest asks for this node as the others must reach it: at its
// advertised addresses.
func joinRequest(o *options) *pb.JoinRequest {
	return &pb.JoinRequest{
		Id: o.node.ID, RaftAddr: o.node.AdvertisedRaft(), GrpcAddr: o.node.AdvertisedGRPC(), CommandVersion: fsm.CommandVersion,
	}
}

// Limits of the HTTP servers (metrics and the Kubernetes API): how many
// connections each keeps open at once, and how long an idle keep-alive
// connection or a slow request header may hold one. A connection past the
// limit waits in the kernel's accept queue until one is free.
const (
	httpMaxConns      = 256
	k8sMaxConns       = 1024
	httpHeaderTimeout = 5 * time.Second
	httpIdleTimeout   = time.Minute
	// metricsTimeout bounds reading a request and writing its answer on the
	// metrics server, whose answers are all short but a profile's.
	metricsTimeout = 2 * time.Minute
	// maxProfileSeconds caps a CPU profile or trace asked for.
	maxProfileSeconds = 60
)

func startHTTP(addr string, withPprof bool, n *node.Node, reg *prometheus.Registry, log hclog.Logger) (*http.Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", capSeconds(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", capSeconds(pprof.Trace))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := n.Ready()
		if !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok: "+why+"\n")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: httpHeaderTimeout, ReadTimeout: metricsTimeout,
		WriteTimeout: metricsTimeout, IdleTimeout: httpIdleTimeout}
	serveHTTP(hs, netutil.LimitListener(lis, httpMaxConns), "http server", log)
	return hs, nil
}

// capSeconds refuses a profile or trace longer than maxProfileSeconds.
func capSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s, err := strconv.Atoi(r.FormValue("seconds")); err == nil && s > maxProfileSeconds {
			http.Error(w, fmt.Sprintf("seconds=%d is above the limit of %d", s, maxProfileSeconds), http.StatusBadRequest)
			return
		}
		h(w, r)
	}
}

// serveHTTP serves hs on lis until hs is shut down.
func serveHTTP(hs *http.Server, lis net.Listener, what string, log hclog.Logger) {
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what, "error", err)
		}
	}()
}

// checkRestore refuses a restore that would overwrite state or read a bad
// backup, before the node starts.
func checkRestore(o *options) error {
	if !o.node.Bootstrap || len(o.node.Peers) > 1 {
		return errors.New("--restore seeds a new single-node cluster: give --bootstrap (and no other --peers); add members afterwards with --join")
	}
	if _, err := os.Stat(filepath.Join(o.node.DataDir, "raft.db")); err == nil {
		return fmt.Errorf("--restore: data dir %s already holds a cluster's state; restore needs an empty one", o.node.DataDir)
	}
	f, err := os.Open(o.restore)
	if err != nil {
		return fmt.Errorf("--restore: %w", err)
	}
	defer f.Close()
	st, err := fsm.ReadSnapshot(f)
	if err != nil {
		return fmt.Errorf("--restore %s: %w", o.restore, err)
	}
	if _, err := st.RaiseTokenCounter(o.restoreTokenFloor); err != nil {
		return fmt.Errorf("--restore-token-floor: %w", err)
	}
	return nil
}

// restore waits for this node to lead its new cluster, then loads the
// backup, with new fencing tokens above tokenFloor.
func restore(ctx context.Context, path string, tokenFloor uint64, n *node.Node, log hclog.Logger) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !n.IsLeader() || !n.Manager().Active() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if err := n.Restore(f, tokenFloor, time.Minute); err != nil {
		return err
	}
	log.Info("backup restored", "file", path)
	return nil
}

// startK8sAPI serves the Kubernetes Lease API on addr, over TLS with the
// node's certificate when tlsCfg is not nil.
func startK8sAPI(addr, grpcAddr string, dial []grpc.DialOption, tlsCfg *tls.Config, log hclog.Logger) (*http.Server, *grpc.ClientConn, error) {
	cc, err := grpc.NewClient(grpcAddr, dial...)
	if err != nil {
		return nil, nil, fmt.Errorf("k8s api: %w", err)
	}
	cfg := k8sapi.DefaultConfig()
	cfg.Client = pb.NewLeasesClient(cc)
	cfg.Logger = log.Named("k8sapi")
	h, err := k8sapi.NewHandler(cfg)
	if err != nil {
		cc.Close()
		return nil, nil, fmt.Errorf("k8s api: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		cc.Close()
		return nil, nil, fmt.Errorf("k8s api listener: %w", err)
	}
	// No ReadTimeout or WriteTimeout: watches stream for up to
	// k8sapi's MaxWatchTimeout, and a read deadline would end them.
	hs := &http.Server{Handler: h, ReadHeaderTimeout: httpHeaderTimeout, IdleTimeout: httpIdleTimeout}
	lis = netutil.LimitListener(lis, k8sMaxConns)
	if tlsCfg != nil {
		lis = tls.NewListener(lis, tlsCfg)
	}
	serveHTTP(hs, lis, "k8s api server", log)
	log.Info("serving the Kubernetes Lease API", "addr", addr, "tls", tlsCfg != nil)
	return hs, cc, nil
}
