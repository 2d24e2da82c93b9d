#!/usr/bin/env bash
# Starts a local 3-node leasekeeper cluster on 127.0.0.1 and stops it on
# Ctrl-C. Client gRPC ports 7001-7003, Raft 8001-8003, HTTP 9001-9003,
# the Kubernetes Lease API on 6443 (n1);
# data under ./data (DATA_DIR to change). BIN points at lease-node.
set -euo pipefail
BIN=${BIN:-bin/lease-node}
DATA_DIR=${DATA_DIR:-data}
peers="n1=127.0.0.1:8001,n2=127.0.0.1:8002,n3=127.0.0.1:8003"
pids=()
stopping=""
# stop ends the nodes and waits for them; why says what asked for it.
stop() {
	trap - INT TERM EXIT
	stopping=1
	echo "$1: stopping the cluster..." >&2
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait || true
}
trap 'stop "Ctrl-C"; exit 0' INT
trap 'stop "SIGTERM"; exit 0' TERM
trap 'stop "exiting"' EXIT
mkdir -p "$DATA_DIR"
for i in 1 2 3; do
	k8s=""
	[ "$i" = 1 ] && k8s="--k8s-api-addr 127.0.0.1:6443"
	"$BIN" --id "n$i" --data-dir "$DATA_DIR/n$i" \
		--grpc-addr "127.0.0.1:700$i" --raft-addr "127.0.0.1:800$i" --http-addr "127.0.0.1:900$i" \
		--bootstrap --peers "$peers" $k8s ${LEASE_NODE_ARGS:-} 2>>"$DATA_DIR/n$i.log" &
	pids+=($!)
done
cat <<MSG
leasekeeper: 3 nodes running
  n1  grpc 127.0.0.1:7001  raft 127.0.0.1:8001  http 127.0.0.1:9001
  n2  grpc 127.0.0.1:7002  raft 127.0.0.1:8002  http 127.0.0.1:9002
  n3  grpc 127.0.0.1:7003  raft 127.0.0.1:8003  http 127.0.0.1:9003
n1 also serves the Kubernetes Lease API: kubectl --server http://127.0.0.1:6443 get leases -A
logs: $DATA_DIR/n1.log .. n3.log     try: bin/leasectl cluster status
Ctrl-C stops all three.
MSG
# Ctrl-C (or TERM) runs its trap, which stops the cluster and exits 0
# before the lines below; reaching them means a node ended by itself.
code=0
wait -n || code=$?
[ -n "$stopping" ] && exit 0
echo "a node exited (status $code); see $DATA_DIR/n*.log" >&2
stop "a node exited"
exit 1
