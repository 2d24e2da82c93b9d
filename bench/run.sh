#!/usr/bin/env bash
# make bench: the same workloads on leasekeeper and on etcd, one after the
# other in one session, then a side-by-side table. Compare the ratios, not
# absolute numbers from different runs: the machines are shared.
#
# leasekeeper: lease-bench starts a 3-node cluster of separate lease-node
# processes on free loopback ports, data in a temp dir, fsync on, and kills
# them when it ends (even if it is killed: Pdeathsig).
# etcd: shared/bench/etcdpeer (a 3-member etcd, also separate processes),
# when ETCDPEER exists; in CI a copy of shared/ sits beside the clone.
#
# Knobs (environment):
#   DURATION=10s  CLIENTS=16   timed length and goroutines of each workload
#   LEASES=20000               keepalive_batch and expiry_storm size, both systems
#                              (the issue's size is 100000: about 10 minutes)
#   KA_INTERVAL=1s             keepalive_batch: each lease renewed this often
#                              (leasekeeper; etcd's client renews at TTL/3)
#   WORKLOADS=all              or a comma list (lease-bench names; scale is opt-in)
#   LEADER_ONLY=1              both benches send everything to the leader
#   ETCD=0                     skip etcd; ETCDPEER=path to etcdpeer
#   OUT=dir                    results (default: a new temp dir)
#   LEASE_BENCH_ARGS="..."     extra lease-bench flags, split on spaces, e.g. --node-args=--log-level=warn
# About 7 minutes with the defaults on 2 cores, about half of it etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-16}
LEASES=${LEASES:-20000}
KA_INTERVAL=${KA_INTERVAL:-1s}
WORKLOADS=${WORKLOADS:-all}
ETCD=${ETCD:-1}
ETCDPEER=${ETCDPEER:-../shared/bench/etcdpeer}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/leasekeeper-bench-XXXXXX")}
mkdir -p "$OUT" bin

common=(-clients "$CLIENTS" -duration "$DURATION" -leases "$LEASES")
if [ "${LEADER_ONLY:-0}" = 1 ]; then
	common+=(-leader-only)
fi

echo "== building" >&2
"$GO" build -o bin/ ./cmd/lease-node ./cmd/lease-bench
"$GO" build -o "$OUT/table" ./bench/table
etcdpeer=""
if [ "$ETCD" != 0 ] && [ -f "$ETCDPEER/main.go" ]; then
	# Built before either run, so compiling etcd does not load the machine
	# during a measurement.
	if (cd "$ETCDPEER" && "$GO" build -o "$OUT/etcdpeer" .); then
		etcdpeer="$OUT/etcdpeer"
	else
		echo "etcdpeer did not build: leasekeeper only" >&2
	fi
elif [ "$ETCD" != 0 ]; then
	echo "no etcdpeer at $ETCDPEER: leasekeeper only" >&2
fi

rc=0
echo "== leasekeeper ($(nproc) cores; results in $OUT)" >&2
# shellcheck disable=SC2086 # LEASE_BENCH_ARGS is meant to split
bin/lease-bench --node-bin bin/lease-node --workload "$WORKLOADS" "${common[@]}" -ka-interval "$KA_INTERVAL" ${LEASE_BENCH_ARGS:-} |
	tee "$OUT/leasekeeper.jsonl" || rc=1

if [ -n "$etcdpeer" ]; then
	# etcdpeer's own sets: "all" has fsync (a disk probe) and the unary
	# workloads, "storm" the two mass ones; it has no scale.
	ew=$(echo "$WORKLOADS" | tr ',' '\n' | sed 's/^all$/all,storm/; s/^quick$/all/' | grep -vx 'scale' | paste -sd, - || true)
	if [ -n "$ew" ]; then
		echo "== etcd" >&2
		"$etcdpeer" -members 3 -workload "$ew" "${common[@]}" -fsync-dirs "${TMPDIR:-/tmp}" | tee "$OUT/etcd.jsonl" || rc=1
	fi
fi

echo >&2
if [ -s "$OUT/etcd.jsonl" ]; then
	"$OUT/table" "$OUT/leasekeeper.jsonl" "$OUT/etcd.jsonl" | tee "$OUT/table.txt"
else
	"$OUT/table" "$OUT/leasekeeper.jsonl" | tee "$OUT/table.txt"
fi
echo "results: $OUT" >&2
exit $rc
