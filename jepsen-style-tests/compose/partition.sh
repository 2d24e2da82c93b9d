#!/usr/bin/env bash
# Fault injection for the docker-compose cluster (docker-compose.yml at the
# repository root): cut, kill and pause nodes while a workload runs.
#
#   partition.sh isolate NODE     cut NODE off from the other nodes (clients still reach it)
#   partition.sh split NODE...    cut the listed nodes off from the rest
#   partition.sh heal             remove every cut
#   partition.sh disconnect NODE  docker network disconnect: cuts clients too
#   partition.sh connect NODE     undo disconnect (same address)
#   partition.sh kill NODE        kill -9 the node (its volume keeps the data)
#   partition.sh start NODE       start a killed node again
#   partition.sh pause NODE       freeze the node (cgroup freezer, like SIGSTOP)
#   partition.sh unpause NODE
#   partition.sh status           each node's view of the cluster
#
# NODE is n1, n2 or n3, in container lk-NODE. Cuts are iptables DROP rules
# in the nodes' containers (they run with NET_ADMIN), on both sides, so
# replies on open connections are dropped too; traffic from the host
# arrives through the network's gateway and is never cut. The commands talk
# to the containers with plain docker (exec, kill, start, pause), which
# works with any compose and takes a fraction of a second.
set -euo pipefail
SCRIPT=$(readlink -f "$0")
cd "$(dirname "$SCRIPT")/../.."

NODES=(n1 n2 n3)
declare -A IP=([n1]=172.28.0.11 [n2]=172.28.0.12 [n3]=172.28.0.13)
NETWORK=${NETWORK:-${COMPOSE_PROJECT_NAME:-leasekeeper}_lk}

usage() { sed -n '2,/^set /p' "$SCRIPT" | grep '^#' | sed 's/^# \{0,1\}//'; exit 2; }
node() { [[ -n "${IP[$1]:-}" ]] || { echo "unknown node $1 (want ${NODES[*]})" >&2; exit 2; }; }
ipt() { docker exec "lk-$1" iptables -w "${@:2}"; }

drop() { # drop traffic between $1 and $2, both directions
	ipt "$1" -A INPUT -s "${IP[$2]}" -j DROP
	ipt "$2" -A INPUT -s "${IP[$1]}" -j DROP
}

cmd=${1:-}; shift || true
case "$cmd" in
isolate)
	node "${1:?NODE}"
	for o in "${NODES[@]}"; do [[ $o == "$1" ]] || drop "$1" "$o"; done
	echo "isolated $1" ;;
split)
	[[ $# -gt 0 ]] || usage
	for a in "$@"; do node "$a"; done
	for a in "$@"; do
		for b in "${NODES[@]}"; do
			[[ " $* " == *" $b "* ]] || drop "$a" "$b"
		done
	done
	echo "cut {$*} from the rest" ;;
heal)
	for n in "${NODES[@]}"; do ipt "$n" -F INPUT || echo "heal: $n not running" >&2; done
	echo "healed" ;;
disconnect)
	node "${1:?NODE}"; docker network disconnect "$NETWORK" "lk-$1"; echo "disconnected $1" ;;
connect)
	node "${1:?NODE}"; docker network connect --ip "${IP[$1]}" "$NETWORK" "lk-$1"; echo "connected $1" ;;
kill)
	node "${1:?NODE}"; docker kill -s KILL "lk-$1" >/dev/null; echo "killed $1" ;;
start)
	node "${1:?NODE}"; docker start "lk-$1" >/dev/null; echo "started $1" ;;
pause)
	node "${1:?NODE}"; docker pause "lk-$1" >/dev/null; echo "paused $1" ;;
unpause)
	node "${1:?NODE}"; docker unpause "lk-$1" >/dev/null; echo "unpaused $1" ;;
status)
	for n in "${NODES[@]}"; do
		printf '%s: ' "$n"
		curl -s -m 1 "http://127.0.0.1:900${n#n}/readyz" || echo "no answer"
	done ;;
*) usage ;;
esac
