# Shared by prepare.sh, teardown.sh and chaos.sh (sourced, not run).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The compose project: fixes the network's name (leasekeeper_lk) whatever
# the checkout's folder is called.
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-leasekeeper}
export COMPOSE_FILE=${COMPOSE_FILE:-$ROOT/docker-compose.yml}
# Compose v1 would otherwise ask the engine for BuildKit features.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
# What prepare.sh started and what the host looked like before, for
# teardown.sh.
STATE_DIR=${LK_COMPOSE_STATE:-${TMPDIR:-/tmp}/leasekeeper-compose}
IMAGE=${LK_IMAGE:-leasekeeper:dev}
BASE_IMAGE=${LK_BASE_IMAGE:-leasekeeper-base:bookworm}
SUITE=${LK_DEBIAN_SUITE:-bookworm}

LK_T0=${LK_T0:-$(date +%s)}
export LK_T0
say() { printf 'compose: [%3ds] %s\n' "$(($(date +%s) - LK_T0))" "$*" >&2; }
die() { say "$*"; exit 1; }

# docker_up reports whether a Docker engine answers, within 10 s.
docker_up() { timeout 10 docker info >/dev/null 2>&1; }

# docker_bridges lists the links dockerd makes on the host: docker0 and
# one br-<network id> per bridge network.
docker_bridges() { ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -E '^(docker0|br-[0-9a-f]{12})$' || true; }

# host_state prints what the run must leave as it found it.
host_state() {
	echo "# iptables-save | wc -l"
	iptables-save 2>/dev/null | wc -l
	echo "# ip -br link"
	ip -br link
	echo "# sysctl net.ipv4.ip_forward"
	sysctl net.ipv4.ip_forward
	echo "# iptables -S FORWARD (policy)"
	iptables -w -S FORWARD 2>/dev/null | grep '^-P' || true
	echo "# docker chains"
	for t in filter nat; do iptables -w -t "$t" -S 2>/dev/null | grep -E '^-N DOCKER' | sed "s/^/$t /" || true; done
	echo "# docker bridges"
	docker_bridges
}
