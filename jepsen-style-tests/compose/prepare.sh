#!/usr/bin/env bash
# Makes a machine ready for the docker-compose cluster (docker-compose.yml
# at the repository root), without any registry or outside address:
#
#  1. installs what is missing with apt-get: docker.io, iptables,
#     mmdebstrap, docker-compose, and a `docker compose` plugin shim in
#     front of docker-compose 1.29 (docker-compose-plugin) if the docker
#     CLI has no compose of its own;
#  2. starts dockerd if no Docker engine answers, and remembers that it did
#     (and how the host's network looked before) for teardown.sh, which
#     stops only that dockerd;
#  3. builds the node image leasekeeper:dev.
#
# The image: when golang:1.26 and debian:bookworm-slim are both present
# locally (or LK_IMAGE_BUILD=dockerfile), from the root Dockerfile;
# otherwise (LK_IMAGE_BUILD=prebuilt, the default on machines without
# internet) from the same static lease-node and leasectl built on this
# host (CGO_ENABLED=0) on a Debian minbase made by mmdebstrap (a
# debootstrap) from the mirror apt already uses and fed to `docker import`
# (leasekeeper-base:bookworm, kept for the next run). Neither build pulls.
#
# prepare.sh --fetch does only the part that waits on the network and the
# disk and needs no Docker engine: step 1, and the base image's root tree
# from mmdebstrap as a tarball ($STATE_DIR/base-$SUITE.tar), which a later
# prepare.sh feeds to `docker import` instead of running mmdebstrap again.
# CI (.ci/run) runs it in the background while the Go steps use the CPU;
# it starts no process that outlives it and changes nothing that
# teardown.sh puts back.
#
# Exit status 3: no Docker engine can run here (install or start failed);
# 1: anything else. Run as root (apt-get, dockerd). Environment: LK_IMAGE_BUILD
# (auto|prebuilt|dockerfile), LK_DEBIAN_MIRROR (default: apt's), LK_DOCKERD_FLAGS,
# LK_COMPOSE_STATE (where the state for teardown.sh goes).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

# dockerd keeps off the host's firewall and forwarding: no iptables rules,
# no ip_forward, no NAT, no default bridge. Published ports go through
# docker-proxy on 127.0.0.1, containers on one compose network reach each
# other over its bridge, and nothing routes them off this machine.
DOCKERD_FLAGS=${LK_DOCKERD_FLAGS:---iptables=false --ip-forward=false --ip-masq=false --bridge=none}

install_missing() {
	local need=()
	command -v dockerd >/dev/null || need+=(docker.io)
	command -v iptables >/dev/null || need+=(iptables)
	command -v ip >/dev/null || need+=(iproute2)
	command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
	if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
		need+=(docker-compose)
	fi
	if [ ${#need[@]} -gt 0 ]; then
		[ "$(id -u)" = 0 ] || nodocker "missing ${need[*]}: run as root, or apt-get install ${need[*]}"
		say "apt-get install ${need[*]}"
		export DEBIAN_FRONTEND=noninteractive
		# The lists may be missing or stale on a fresh machine.
		timeout 300 apt-get update -qq || nodocker "apt-get update failed"
		timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
			nodocker "apt-get install ${need[*]} failed"
	fi
	command -v docker >/dev/null || nodocker "no docker CLI after installing docker.io"
	if ! docker compose version >/dev/null 2>&1; then
		local dir=/usr/local/lib/docker/cli-plugins
		say "installing the docker compose shim in $dir (docker-compose $(docker-compose version --short 2>/dev/null))"
		install -D -m 0755 "$ROOT/jepsen-style-tests/compose/docker-compose-plugin" "$dir/docker-compose"
		docker compose version >/dev/null 2>&1 || die "docker compose does not work through the shim"
	fi
}

start_dockerd() {
	mkdir -p "$STATE_DIR"
	if docker_up; then
		if [ -f "$STATE_DIR/dockerd.pid" ] && kill -0 "$(cat "$STATE_DIR/dockerd.pid")" 2>/dev/null; then
			say "using the dockerd that an earlier prepare.sh started (pid $(cat "$STATE_DIR/dockerd.pid"))"
		else
			say "using the Docker engine that runs already (teardown.sh will leave it running)"
		fi
		return
	fi
	[ "$(id -u)" = 0 ] || nodocker "no Docker engine answers and starting dockerd needs root"
	command -v dockerd >/dev/null || nodocker "no dockerd (apt-get install docker.io)"
	rm -f "$STATE_DIR/dockerd.pid"
	# What dockerd may change, for teardown.sh to put back.
	mkdir -p "$STATE_DIR/host-before"
	sysctl -n net.ipv4.ip_forward >"$STATE_DIR/host-before/ip_forward"
	iptables -w -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}' >"$STATE_DIR/host-before/forward_policy"
	for t in filter nat; do iptables -w -t "$t" -S >"$STATE_DIR/host-before/rules.$t" 2>/dev/null || true; done
	iptables-save 2>/dev/null | sed -n 's/^\*//p' >"$STATE_DIR/host-before/tables" || true
	docker_bridges >"$STATE_DIR/host-before/bridges"
	say "starting dockerd $DOCKERD_FLAGS (log $STATE_DIR/dockerd.log)"
	# shellcheck disable=SC2086
	setsid dockerd $DOCKERD_FLAGS --pidfile "$STATE_DIR/dockerd.engine.pid" \
		</dev/null >"$STATE_DIR/dockerd.log" 2>&1 &
	echo $! >"$STATE_DIR/dockerd.pid"
	local pid=$! i
	for i in $(seq 1 60); do
		docker_up && { say "dockerd (pid $pid) is up after $((i / 2)) s"; return; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	tail -n 20 "$STATE_DIR/dockerd.log" >&2 || true
	kill "$pid" 2>/dev/null || true
	nodocker "dockerd exited or did not answer within 30 s (log above, $STATE_DIR/dockerd.log)"
}

# mirror prints the Debian mirror that apt uses for $SUITE.
mirror() {
	if [ -n "${LK_DEBIAN_MIRROR:-}" ]; then echo "$LK_DEBIAN_MIRROR"; return; fi
	local m
	# deb822 sources: the URIs of the first stanza of type deb whose
	# Suites list $SUITE itself.
	m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$SUITE" '
		/^[ \t]*$/ { if (deb && has && uri != "") { print uri; exit } deb = has = 0; uri = ""; next }
		/^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
		/^URIs:/ { uri = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) has = 1 }
		END { if (deb && has && uri != "") print uri }' | head -n 1)
	if [ -z "$m" ]; then
		m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk -v s="$SUITE" '$1 == "deb" { u = $2; if (u ~ /^\[/) { for (i = 2; i <= NF; i++) if ($i ~ /\]$/) { u = $(i + 1); j = i + 2; break } } else j = 3; if ($j == s) { print u; exit } }')
	fi
	[ -n "$m" ] || die "no Debian mirror for $SUITE in apt's sources; set LK_DEBIAN_MIRROR"
	echo "$m"
}

# The base image's root tree, as prepare.sh --fetch leaves it. Written to
# $BASE_TAR.tmp and renamed when mmdebstrap has finished, so a tarball
# there is always whole.
BASE_TAR=$STATE_DIR/base-$SUITE.tar

# mmdebstrap_base writes the base image's root tree as a tarball to $1 (-
# for stdout). mmdebstrap rather than debootstrap: it downloads with apt
# in parallel, skips dpkg's fsyncs and writes the tree as a tarball,
# leaving nothing mounted or unpacked on the host (debootstrap took twice
# as long here). Without docs, man pages and translations, as in
# debian:bookworm-slim.
mmdebstrap_base() {
	local m
	m=$(mirror)
	say "mmdebstrap $SUITE from $m (minbase + iproute2, iptables, ca-certificates) to $1"
	timeout 900 mmdebstrap --variant=minbase --include=iproute2,iptables,ca-certificates \
		--format=tar --dpkgopt=force-unsafe-io \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		"$SUITE" "$1" "$m" 2>"$STATE_DIR/mmdebstrap.log"
}

# fetch_base leaves the base tree in $BASE_TAR unless the image or the
# tarball is there already.
fetch_base() {
	mkdir -p "$STATE_DIR"
	if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
		say "base image $BASE_IMAGE is there: no tarball needed"
		return
	fi
	if [ -f "$BASE_TAR" ]; then
		say "base tree $BASE_TAR is there"
		return
	fi
	rm -f "$BASE_TAR.tmp"
	mmdebstrap_base "$BASE_TAR.tmp" ||
		{ tail -n 20 "$STATE_DIR/mmdebstrap.log" >&2; rm -f "$BASE_TAR.tmp"; die "mmdebstrap failed (log above)"; }
	mv "$BASE_TAR.tmp" "$BASE_TAR"
	say "base tree ready: $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
}

build_base() {
	if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
		say "base image $BASE_IMAGE is there"
		rm -f "$BASE_TAR"
		return
	fi
	local import=(docker import --change 'CMD ["/bin/bash"]')
	if [ -f "$BASE_TAR" ]; then
		say "docker import $BASE_IMAGE from $BASE_TAR (prepare.sh --fetch)"
		"${import[@]}" "$BASE_TAR" "$BASE_IMAGE" >/dev/null ||
			{ docker rmi "$BASE_IMAGE" >/dev/null 2>&1 || true; die "docker import $BASE_TAR failed"; }
		# The image is the cache from now on (teardown.sh keeps it).
		rm -f "$BASE_TAR"
		return
	fi
	mmdebstrap_base - | "${import[@]}" - "$BASE_IMAGE" >/dev/null ||
		{ tail -n 20 "$STATE_DIR/mmdebstrap.log" >&2; docker rmi "$BASE_IMAGE" >/dev/null 2>&1 || true; die "mmdebstrap | docker import failed (log above)"; }
}

build_image() {
	local how=${LK_IMAGE_BUILD:-auto}
	if [ "$how" = auto ]; then
		how=prebuilt
		if docker image inspect golang:1.26 >/dev/null 2>&1 && docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
			how=dockerfile
		fi
	fi
	case "$how" in
	dockerfile)
		say "docker build -t $IMAGE (the root Dockerfile, local base images only)"
		docker build --pull=false -t "$IMAGE" "$ROOT" ;;
	prebuilt)
		build_base
		local ctx
		ctx=$(mktemp -d "${TMPDIR:-/tmp}/lk-image.XXXXXX")
		say "building static lease-node and leasectl"
		(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$ctx/" ./cmd/lease-node ./cmd/leasectl) ||
			{ rm -rf "$ctx"; die "go build failed"; }
		cp "$ROOT/Dockerfile.prebuilt" "$ctx/Dockerfile"
		say "docker build -t $IMAGE (Dockerfile.prebuilt on $BASE_IMAGE)"
		docker build --pull=false -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ctx" >/dev/null ||
			{ rm -rf "$ctx"; die "docker build failed"; }
		rm -rf "$ctx" ;;
	*) die "LK_IMAGE_BUILD=$how: want auto, prebuilt or dockerfile" ;;
	esac
	say "image $IMAGE ready"
}

nodocker() { say "no Docker engine: $*"; exit 3; }

case "${1:-}" in
--fetch)
	install_missing
	# Without an engine (none runs before chaos.sh starts one), `docker
	# image inspect` fails and the tarball is made; the image build
	# itself needs the engine and the host's Go build, so it waits.
	case "${LK_IMAGE_BUILD:-auto}" in
	dockerfile) say "LK_IMAGE_BUILD=dockerfile: no base tree to fetch" ;;
	*) fetch_base ;;
	esac
	exit 0 ;;
"") ;;
*) die "usage: prepare.sh [--fetch]" ;;
esac
install_missing
start_dockerd
build_image
