#!/usr/bin/env bash
# Undoes prepare.sh and `docker compose up`: removes the compose cluster's
# containers, volumes and network, stops the dockerd that prepare.sh
# started (never one that ran before it), and puts back what that dockerd
# changed on the host: iptables rules and DOCKER chains, the FORWARD
# policy, docker0 and br-* bridges, net.ipv4.ip_forward. The images stay,
# so the next prepare.sh is quick (LK_REMOVE_IMAGES=1 removes them too).
# Safe to run more than once, and when nothing was started.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

status=0
fail() { say "teardown: $*"; status=1; }

ours=""
if [ -f "$STATE_DIR/dockerd.pid" ]; then
	ours=$(cat "$STATE_DIR/dockerd.pid")
	kill -0 "$ours" 2>/dev/null || { say "teardown: dockerd $ours is gone already"; }
fi

if docker_up; then
	timeout 120 docker compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 ||
		fail "docker compose down failed"
	# Whatever compose could not remove (a container it no longer knows).
	for c in lk-n1 lk-n2 lk-n3; do
		docker inspect "$c" >/dev/null 2>&1 && { timeout 60 docker rm -f -v "$c" >/dev/null || fail "docker rm $c failed"; }
	done
	for v in n1 n2 n3; do
		docker volume inspect "${COMPOSE_PROJECT_NAME}_$v" >/dev/null 2>&1 &&
			{ timeout 60 docker volume rm "${COMPOSE_PROJECT_NAME}_$v" >/dev/null || fail "docker volume rm ${COMPOSE_PROJECT_NAME}_$v failed"; }
	done
	docker network inspect "${COMPOSE_PROJECT_NAME}_lk" >/dev/null 2>&1 &&
		{ timeout 60 docker network rm "${COMPOSE_PROJECT_NAME}_lk" >/dev/null || fail "docker network rm failed"; }
	if [ "${LK_REMOVE_IMAGES:-}" = 1 ]; then
		docker rmi "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
	fi
fi

if [ -n "$ours" ] && kill -0 "$ours" 2>/dev/null; then
	say "teardown: stopping dockerd (pid $ours)"
	kill -TERM "$ours"
	for _ in $(seq 1 60); do kill -0 "$ours" 2>/dev/null || break; sleep 0.5; done
	if kill -0 "$ours" 2>/dev/null; then
		fail "dockerd $ours did not stop within 30 s: killing it"
		kill -KILL "$ours" 2>/dev/null
		sleep 1
	fi
fi

# The host, as prepare.sh found it before it started dockerd.
before=$STATE_DIR/host-before
if [ -n "$ours" ] && [ -d "$before" ]; then
	# Bridges: docker0 and br-<id> that were not there before.
	for b in $(docker_bridges); do
		grep -qx "$b" "$before/bridges" 2>/dev/null && continue
		ip link del "$b" || fail "ip link del $b failed"
	done
	# iptables: rules dockerd added (they name a DOCKER chain, docker0 or
	# a br-<id> bridge) and its DOCKER chains, in the tables it uses.
	# Rules of others (the netns chaos mode's, say) are left alone.
	for t in filter nat; do
		while read -r rule; do
			# shellcheck disable=SC2086
			iptables -w -t "$t" -D ${rule#-A } || fail "iptables -t $t -D ${rule#-A } failed"
		done < <(iptables -w -t "$t" -S 2>/dev/null | grep '^-A' | grep -E 'DOCKER|docker0|br-[0-9a-f]{12}' |
			grep -vxF -f "$before/rules.$t")
		for ch in $(iptables -w -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
			grep -qx -- "-N $ch" "$before/rules.$t" 2>/dev/null && continue
			if ! { iptables -w -t "$t" -F "$ch" && iptables -w -t "$t" -X "$ch"; }; then
				fail "iptables -t $t -X $ch failed"
			fi
		done
	done
	# A table dockerd brought into being (nat, with iptables-nft) stays,
	# empty, after its rules go: remove it if nothing else uses it.
	if [ -f "$before/tables" ] && iptables -V 2>/dev/null | grep -q nf_tables && command -v nft >/dev/null; then
		for t in $(iptables-save 2>/dev/null | sed -n 's/^\*//p'); do
			grep -qx "$t" "$before/tables" && continue
			if iptables -w -t "$t" -S | grep -qv '^-P'; then continue; fi
			nft delete table ip "$t" || fail "nft delete table ip $t failed"
		done
	fi
	policy=$(cat "$before/forward_policy" 2>/dev/null)
	if [ -n "$policy" ] && ! iptables -w -S FORWARD | grep -qx -- "-P FORWARD $policy"; then
		iptables -w -P FORWARD "$policy" || fail "iptables -P FORWARD $policy failed"
	fi
	fwd=$(cat "$before/ip_forward" 2>/dev/null)
	if [ -n "$fwd" ] && [ "$(sysctl -n net.ipv4.ip_forward)" != "$fwd" ]; then
		sysctl -q -w "net.ipv4.ip_forward=$fwd" || fail "sysctl ip_forward=$fwd failed"
	fi
fi
if [ -n "$ours" ]; then
	rm -rf "$before" "$STATE_DIR/dockerd.pid"
fi
exit "$status"
