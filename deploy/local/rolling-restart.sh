#!/usr/bin/env bash
# Rolling restarts under load through HAProxy: starts a fresh local cluster
# (cluster.py: 3 NATS, 2 presence, 3 gateways, HAProxy), runs a switchboard-loadtest
# fan-out through HAProxy's single port, and while it publishes restarts the
# gateways one by one, each restart waiting until the gateway is ready again:
#   1. SIGTERM: the gateway drains (disconnect 3001 spread over drain_window);
#   2. kill -9: the gateway dies with its connections.
# Each run fails (exit 3) unless 0 publications are lost, 0 are duplicated, every
# client is connected again at the end and every restart succeeded (the gateway was
# ready again) — switchboard-loadtest --strict targets.
#
#   rolling-restart.sh small   a few hundred clients, a 2 s drain window (make test)
#   rolling-restart.sh large   thousands of clients, the config's drain window; the
#                              numbers go into BENCHMARKS.md (make bench-rolling)
#
# Environment: BIN_DIR (the three binaries; default ${CARGO_TARGET_DIR:-target}/release),
# BENCH_MD (large: the file to write, default BENCHMARKS.md), KEEP_CLUSTER=1 (leave
# the state directory with the logs after a failure).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SCALE=${1:-small}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
LOADTEST=$BIN_DIR/switchboard-loadtest
CLUSTER=$ROOT/deploy/local/cluster.py
export SWITCHBOARD_BIN_DIR=$BIN_DIR
STATE=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-rolling.XXXXXX")
export CLUSTER_DIR=$STATE/cluster

case "$SCALE" in
small)
    # 300 clients; each restart takes ~2 s of drain plus a start.
    export SWITCHBOARD_DRAIN_WINDOW=2
    SHAPE=(--channels 3 --subscribers 100 --publishers 3 --rate 20)
    TIMES=1,5,9
    DURATION=14
    ;;
large)
    # Thousands of clients; drain_window from gateway.toml (10 s). HAProxy's maxconn
    # (9,500) and the machine's file descriptor limit bound the client count.
    unset SWITCHBOARD_DRAIN_WINDOW
    SHAPE=(--channels 6 --subscribers 1000 --publishers 6 --rate 2 --connect-rate 1000)
    TIMES=5,25,45
    DURATION=65
    BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
    ;;
*)
    echo "usage: $0 small|large" >&2
    exit 2
    ;;
esac

for bin in "$LOADTEST" "$BIN_DIR/switchboard-gateway" "$BIN_DIR/switchboard-presence"; do
    [ -x "$bin" ] || { echo "rolling-restart.sh: $bin not found; build it first" >&2; exit 1; }
done

failed=0
cleanup() {
    if [ "$failed" = 1 ] && [ "${KEEP_CLUSTER:-}" = 1 ]; then
        python3 "$CLUSTER" down --keep-logs >/dev/null 2>&1 || true
        echo "rolling-restart.sh: logs kept in $STATE" >&2
    else
        python3 "$CLUSTER" down >/dev/null 2>&1 || true
        rm -rf "$STATE"
    fi
}
trap cleanup EXIT
# The tool, HAProxy and the gateways hold thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== rolling-restart ($SCALE): starting the local cluster" >&2
python3 "$CLUSTER" up >"$STATE/up.txt"
PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$CLUSTER_DIR/cluster.json")
KEY=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$CLUSTER_DIR/cluster.json")

run() {
    local mode=$1 flag=$2 title=$3
    local bench=()
    if [ "$SCALE" = large ]; then
        bench=(--bench-md "$BENCH_MD" --bench-section "rolling-$mode" --bench-title "$title"
            --bench-note "Local cluster (\`make cluster\` topology: 3 NATS nodes with R3 streams, 2 presence replicas, 3 release gateways, HAProxy leastconn with /readyz checks) on the same machine as the load generator; every client and the publishers go through HAProxy's one port. The hook restarts gateway 1, 2, 3 in turn, each waiting until the gateway answers /readyz again. Command: \`make bench-rolling\`.")
    fi
    echo "== rolling-restart ($SCALE): $title" >&2
    # $SWITCHBOARD_LOADTEST_HOOK_RUN (0, 1, 2) picks the gateway; single quotes keep
    # it for the hook's shell.
    # A relative path: the command is recorded in BENCHMARKS.md.
    local hook="python3 deploy/local/cluster.py restart-gateway --run \"\$SWITCHBOARD_LOADTEST_HOOK_RUN\"${flag:+ $flag}"
    if ! "$LOADTEST" failover --url "ws://127.0.0.1:$PORT/connection/websocket" \
        "${SHAPE[@]}" --payload 100 --via api --api-key "$KEY" \
        --channel-prefix "chat:rolling-$mode-" --duration "$DURATION" --drain 30 \
        --kill-command "$hook" --kill-at "$TIMES" --hook-timeout 90 \
        --quiet --strict --target 'lost<=0' --target 'duplicates<=0' --target 'not_back<=0' \
        --target 'hook_failures<=0' \
        --json "$STATE/$mode.json" "${bench[@]}"; then
        failed=1
        echo "rolling-restart.sh: $title: a target was missed (see the table above)" >&2
        python3 "$CLUSTER" status >&2 || true
        return 1
    fi
}

run sigterm "" "Rolling restart, SIGTERM drain: 3 gateways restarted one by one under fan-out" || true
run kill "--kill" "Rolling restart, kill -9: 3 gateways killed and restarted one by one under fan-out" || true
if [ "$failed" = 1 ]; then
    exit 3
fi
echo "== rolling-restart ($SCALE): both runs lost nothing and got every client back" >&2
