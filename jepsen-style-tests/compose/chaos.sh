#!/usr/bin/env bash
# make compose-chaos: the chaos suite against the docker-compose cluster.
#
#  prepare.sh (apt-get, dockerd, the image) -> docker compose up ->
#  leasectl cluster health -> the jepsen workload on 127.0.0.1:7001-7003
#  while the nemesis makes its faults through partition.sh -> the checkers
#  -> teardown.sh, on every exit path.
#
# The run directory is jepsen-style-tests/runs/compose/<time>/ (and
# runs/compose/latest), as for the netns runs, plus host-before.txt and
# host-after.txt: iptables-save | wc -l, ip -br link and ip_forward before
# prepare.sh and after teardown.sh, which must match (links of other
# tests, lkj-*, aside). Fails when a checker fails, when the run lacks a
# partition, a pause or a kill made through partition.sh, or when the host
# is not as it was.
#
# When no Docker engine can run here the run says why and fails if CI is
# set; elsewhere it stops there with status 0.
#
# Environment: LK_COMPOSE_DURATION (45s), LK_COMPOSE_NEMESIS (the compose
# short mix), LK_COMPOSE_SEED.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

DURATION=${LK_COMPOSE_DURATION:-45s}
RUNS=$ROOT/jepsen-style-tests/runs/compose
ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
t0=$LK_T0
elapsed() { echo "$(($(date +%s) - t0))s"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/lk-compose-chaos.XXXXXX")
host_state >"$work/host-before.txt"
rundir=""
outcome=""

finish() {
	local rc=$?
	trap - EXIT INT TERM
	say "tearing down ($(elapsed))"
	"$ROOT/jepsen-style-tests/compose/teardown.sh" || rc=1
	host_state >"$work/host-after.txt"
	local dest=${rundir:-$work}
	[ "$dest" = "$work" ] || cp "$work/host-before.txt" "$work/host-after.txt" "$dest/"
	# Other engineers' netns runs (lkj-*) come and go meanwhile.
	if ! diff <(grep -v 'lkj-' "$work/host-before.txt") <(grep -v 'lkj-' "$work/host-after.txt") >"$dest/host-diff.txt"; then
		say "the host is not as it was before the run:"
		cat "$dest/host-diff.txt" >&2
		rc=1
	else
		say "host as before: $(sed -n 2p "$work/host-after.txt") iptables-save lines, $(grep -c . <(sed -n '/^# ip -br link/,/^# sysctl/p' "$work/host-after.txt" | grep -v '^#')) links, $(grep ip_forward "$work/host-after.txt" | grep -v '^#') (saved in $dest)"
	fi
	rm -f "$work/leasectl" "$work/jepsen"
	[ "$dest" = "$work" ] || rm -rf "$work"
	[ "$rc" = 0 ] || outcome=FAILED
	say "compose-chaos: ${outcome:-passed} after $(elapsed)"
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for p in 7001 7002 7003 9001 9002 9003; do
	if ss -Hltn "sport = :$p" | grep -q .; then die "port $p is taken on this host: the compose cluster publishes 127.0.0.1:7001-7003 and 9001-9003"; fi
done

rc=0
"$ROOT/jepsen-style-tests/compose/prepare.sh" || rc=$?
if [ "$rc" = 3 ]; then
	if [ -n "${CI:-}" ]; then die "Docker cannot run on this machine (above): compose-chaos fails in CI"; fi
	say "Docker cannot run on this machine (above): compose-chaos skipped"
	outcome="skipped (no Docker)"
	exit 0
fi
[ "$rc" = 0 ] || die "prepare.sh failed"
say "prepared ($(elapsed))"

go build -o "$work/" ./cmd/leasectl ./jepsen-style-tests/cmd/jepsen

timeout 120 docker compose up -d --no-build || die "docker compose up failed"
healthy=""
for _ in $(seq 1 60); do
	if "$work/leasectl" --endpoints "$ENDPOINTS" --timeout 2s cluster health >"$work/health.txt" 2>&1; then healthy=1; break; fi
	sleep 1
done
cat "$work/health.txt" >&2
[ -n "$healthy" ] || { docker compose logs --tail 20 >&2 || true; die "the compose cluster is not healthy after 60 s"; }
say "cluster healthy ($(elapsed))"

# Short quiet spells, so that a short run still makes every kind.
args=(-short -endpoints "$ENDPOINTS" -partition-script "$ROOT/jepsen-style-tests/compose/partition.sh"
	-duration "$DURATION" -quiet-min 1s -quiet-max 2s -runs-dir "$RUNS")
[ -z "${LK_COMPOSE_NEMESIS:-}" ] || args+=(-nemesis "$LK_COMPOSE_NEMESIS")
[ -z "${LK_COMPOSE_SEED:-}" ] || args+=(-seed "$LK_COMPOSE_SEED")
jrc=0
rm -f "$RUNS/latest" # so that an old run is never taken for this one
# The workload, the checkers (porcupine: 2 minutes at most) and slack.
timeout --signal=INT --kill-after=30s 10m "$work/jepsen" "${args[@]}" || jrc=$?
rundir=$(readlink -f "$RUNS/latest" || true)
if [ -z "$rundir" ] || [ ! -f "$rundir/results.json" ]; then die "the run wrote no results.json (jepsen exit $jrc)"; fi
docker compose logs --no-color >"$rundir/compose.log" 2>&1 || true

# What the run must show besides the checkers' verdicts.
res=$rundir/results.json
missing=()
for k in partition pause kill; do
	grep -Eq "\"$k-[a-z-]+\": [1-9]" "$res" || missing+=("no $k fault")
done
faultlog=$(sed -n '/"fault_log": \[/,/^  \]/p' "$res")
used=$(grep -oE 'partition\.sh [a-z]+' <<<"$faultlog" | sort -u)
for c in isolate kill start pause unpause heal; do
	grep -qx "partition.sh $c" <<<"$used" || missing+=("no partition.sh $c")
done
# fault_log lines: "<start>..<end> partition-isolate-leader: <detail>";
# an isolation that the run's end cut short says so and is not counted.
isolations=$(grep ' partition-isolate-leader: ' "$res" | grep -vc 'leader change not checked' || true)
changes=$(grep ' partition-isolate-leader: ' "$res" | grep -c '; new leader n[0-9]* (was n[0-9]*)' || true)
if [ "$isolations" = 0 ] || [ "$isolations" != "$changes" ]; then
	missing+=("leader changes under $changes of $isolations leader isolations")
fi
grep -q '"mode": "compose"' "$res" || missing+=("mode is not compose")
if [ ${#missing[@]} -gt 0 ]; then
	say "the run lacks: ${missing[*]} (see $res)"
	exit 1
fi
say "faults through partition.sh: $(grep -oE 'partition\.sh [a-z]+' <<<"$faultlog" | sort | uniq -c | awk '{printf "%s×%s ", $3, $1}')"
say "leader isolations with a new leader: $changes of $isolations"
[ "$jrc" = 0 ] || die "a checker failed or the run could not be made (jepsen exit $jrc; $rundir/summary.txt)"
say "run dir $rundir"
