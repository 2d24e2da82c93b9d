// Command jepsen runs leasekeeper's chaos suite: real lease-node processes,
// a concurrent workload, a nemesis, and checkers over the recorded history.
//
//	go run ./jepsen-style-tests/cmd/jepsen -nodes 5 -duration 10m
//	go run ./jepsen-style-tests/cmd/jepsen -short
//	go run ./jepsen-style-tests/cmd/jepsen -short -nemesis clock-skew-extreme   # negative control
//	go run ./jepsen-style-tests/cmd/jepsen -check jepsen-style-tests/runs/latest
//
// It exits 0 when every checker passed, 1 when one found a violation, 2
// when the run could not be made. Network namespaces need root; without
// them it falls back to loopback mode and says so.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/checker"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/compose"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/nemesis"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/runner"
)

func main() { os.Exit(run()) }

func run() int {
	short := false
	for _, a := range os.Args[1:] {
		if a == "-short" || a == "--short" || a == "-short=true" || a == "--short=true" {
			short = true
		}
	}
	cfg := runner.DefaultConfig()
	if short {
		cfg = runner.ShortConfig()
	}
	fs := flag.NewFlagSet("jepsen", flag.ContinueOnError)
	fs.Bool("short", false, "the short run: 3 nodes, 90s, several fault kinds (other flags override)")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "cluster size")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the workload and the nemesis run")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "network mode: auto, netns (root) or loopback")
	fs.StringVar(&cfg.Binary, "binary", "", "lease-node binary to run (default: build one into the run dir)")
	fs.StringVar(&cfg.RunsDir, "runs-dir", "", "where run directories go (default jepsen-style-tests/runs)")
	nem := fs.String("nemesis", strings.Join(cfg.Nemesis, ","), "fault kinds, comma separated, or all, short, none; known: "+strings.Join(nemesis.Kinds, ",")+","+nemesis.ClockSkewExtreme)
	fs.DurationVar(&cfg.QuietMin, "quiet-min", cfg.QuietMin, "shortest healthy time between faults")
	fs.DurationVar(&cfg.QuietMax, "quiet-max", cfg.QuietMax, "longest healthy time between faults")
	fs.DurationVar(&cfg.FaultMin, "fault-min", cfg.FaultMin, "shortest partition (kills last half as long)")
	fs.DurationVar(&cfg.FaultMax, "fault-max", cfg.FaultMax, "longest partition")
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients")
	fs.IntVar(&cfg.MutexClients, "mutex-clients", -1, "how many of the clients run mutex cycles (default 2/5 of -clients)")
	fs.IntVar(&cfg.OneShotClients, "oneshot-clients", cfg.OneShotClients, "holders that renew through the followers with one-shot unary calls, besides -clients")
	fs.DurationVar(&cfg.OneShotRetryDelay, "oneshot-retry-delay", 0, "how long a one-shot holder waits before it retries an unanswered renewal (default 50ms; past an election timeout plus 1s: negative control)")
	fs.DurationVar(&cfg.LeaseDuration, "lease-duration", cfg.LeaseDuration, "lease duration the clients ask for")
	fs.StringVar(&cfg.Mutex, "mutex", cfg.Mutex, "mutex implementation: client (client.Mutex) or base (base calls, renewed by the worker)")
	fs.StringVar(&cfg.Guard, "guard", cfg.Guard, "fenced register guard: monotonic, or broken (negative control)")
	fs.BoolVar(&cfg.StaleWriter, "stale-writer", false, "one mutex client ignores its deadline and keeps writing (negative control)")
	fs.StringVar(&cfg.CorruptHistory, "corrupt-history", "", "tamper with the history before checking: swap-tokens (negative control)")
	fs.StringVar(&cfg.Fault, "unsafe-test-fault", "", "start every node with lease-node --unsafe-test-fault, which breaks one safety rule (negative control): no-fresh-duration, early-expiry, reuse-tokens, no-confirm, ignore-expire-doubt, skip-lock-delay")
	fs.DurationVar(&cfg.LinearizabilityTimeout, "lin-timeout", cfg.LinearizabilityTimeout, "bound on porcupine's search (0: none)")
	fs.Float64Var(&cfg.MinAvailability, "min-availability", cfg.MinAvailability, "share of calls that must be answered while a majority is connected")
	fs.Float64Var(&cfg.MaxDrift, "max-drift", cfg.MaxDrift, "documented clock drift bound")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed (0: from the clock)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "lease-node --log-level")
	fs.StringVar(&cfg.UpgradeFrom, "upgrade-from", "", "rolling upgrade: start the cluster on lease-node built from this git tag (e.g. "+runner.PreviousRelease+") and move it to the current tree's one node at a time (nemesis default: "+nemesis.RollingUpgrade+")")
	fs.BoolVar(&cfg.Downgrade, "downgrade", false, "with -upgrade-from: go back to the older release after the upgrade, and forth again")
	endpoints := fs.String("endpoints", "", "run the workload against this external cluster (host:port,...), e.g. docker compose; no nemesis unless -partition-script")
	fs.StringVar(&cfg.PartitionScript, "partition-script", "", "with -endpoints: the docker compose cluster's compose/partition.sh, through which the nemesis makes its faults (default kinds: "+strings.Join(compose.ShortKinds, ",")+")")
	check := fs.String("check", "", "only re-run the checkers on this run directory's history.jsonl")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if cfg.MutexClients < 0 {
		cfg.MutexClients = cfg.Clients * 2 / 5
	}

	if *check != "" {
		opts := checker.DefaultOptions()
		opts.LinearizabilityTimeout, opts.MinAvailability = cfg.LinearizabilityTimeout, cfg.MinAvailability
		res, err := runner.Recheck(*check, opts, os.Stdout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "jepsen: %v\n", err)
			return 2
		}
		return exitCode(res)
	}

	if cfg.PartitionScript != "" && *endpoints == "" {
		fmt.Fprintln(os.Stderr, "jepsen: -partition-script drives a docker compose cluster: it needs -endpoints")
		return 2
	}
	nemSet := false
	fs.Visit(func(f *flag.Flag) { nemSet = nemSet || f.Name == "nemesis" })
	if cfg.UpgradeFrom != "" && !nemSet {
		*nem = nemesis.RollingUpgrade
	}
	if *endpoints != "" {
		cfg.Endpoints = strings.Split(*endpoints, ",")
		switch {
		case nemSet:
		case cfg.PartitionScript != "":
			*nem = strings.Join(compose.ShortKinds, ",")
		default:
			*nem = "none"
		}
	}
	switch *nem {
	case "all":
		cfg.Nemesis = nemesis.Kinds
	case "short":
		cfg.Nemesis = nemesis.ShortKinds
	case "none", "":
		cfg.Nemesis = nil
	default:
		cfg.Nemesis = strings.Split(*nem, ",")
		for _, k := range cfg.Nemesis {
			if !nemesis.Known(k) {
				fmt.Fprintf(os.Stderr, "jepsen: unknown fault kind %q\n", k)
				return 2
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg.Out = os.Stdout
	res, err := runner.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "jepsen: %v\n", err)
		return 2
	}
	return exitCode(res)
}

func exitCode(res *runner.Results) int {
	if res.Valid() {
		return 0
	}
	return 1
}
