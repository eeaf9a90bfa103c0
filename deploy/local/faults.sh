#!/usr/bin/env bash
# Faults under load through HAProxy: starts a fresh local cluster (cluster.py: 3 NATS
# nodes with R3 streams, 2 presence replicas, 3 gateways, HAProxy) and runs a
# switchboard-loadtest fan-out through HAProxy's port once per fault, the load tool's
# hooks injecting it step by step (faults.sh step FAULT RUN …):
#   nats      kill -9 of the NATS node leading the chat stream, then its restart;
#   presence  kill -9 of gateway 1 (restarted at once) so that its members go stale,
#             then kill -9 of the presence replica that sweeps them, mid-sweep, and
#             its restart;
#   freeze    gateway 1 stopped (SIGSTOP) for 30 s, longer than the presence TTL
#             (20 s), then continued.
# The last step of each run checks presence_stats of every channel through HAProxy,
# while the clients are still connected: exactly the load tool's subscribers plus the
# observer (and, in the presence and freeze faults, exactly the members whose joins
# and leaves the observer saw: a member back without its join announced fails). A presence observer (presence-observer.js, the real centrifuge-js SDK) on
# gateway 3, which no fault touches, watches every join and leave.
# Each run fails (exit 3) unless 0 acknowledged publications are lost, 0 duplicated,
# every client is back, every step succeeded (switchboard-loadtest --strict targets),
# the observer saw no leave twice and never dropped, and the channels are empty once
# the load has gone.
#
#   faults.sh small   a few hundred clients (make test-faults)
#   faults.sh large   thousands of clients; the numbers go into BENCHMARKS.md
#                     (make bench-rolling)
#
# Environment: BIN_DIR (the three binaries; default ${CARGO_TARGET_DIR:-target}/release),
# BENCH_MD (large: the file to write, default BENCHMARKS.md), FAULTS (the faults to
# run, default "nats presence freeze"), KEEP_CLUSTER=1 (leave the state directory with
# the logs after a failure; KEEP_CLUSTER=always: after every run). Needs node and
# tests/compat/node_modules (npm ci).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CLUSTER=$ROOT/deploy/local/cluster.py

# The hook: step RUN (0, 1, …: $SWITCHBOARD_LOADTEST_HOOK_RUN) of FAULT, on the cluster
# in $CLUSTER_DIR. The run's --kill-at has one time per step; steps run one after the
# other, a long one delaying the next.
step() {
    local fault=$1 run=$2 channels=$3 clients=$4
    local check=(python3 "$CLUSTER" check-presence --channel-prefix "chat:faults-$fault-"
        --channels "$channels" --expect-clients "$clients" --timeout 60)
    # The members must also be those whose joins and leaves the observer saw. Not in
    # the NATS fault: join and leave pushes are at most once, and a NATS node going
    # may take some with it.
    local view=(--observer-view "$(dirname "$CLUSTER_DIR")/$fault.observer-view.json")
    case "$fault:$run" in
    # The leader of the chat namespace's stream: its publishes and reads stop until
    # another node is elected, the hardest case for delivery and recovery.
    nats:0) python3 "$CLUSTER" kill-nats --leader-of sb-n_chat ;;
    nats:1) python3 "$CLUSTER" restart-nats ;;
    nats:2) "${check[@]}" ;;
    # The restarted gateway is a new node: the dead one's members expire 20-25 s later.
    presence:0) python3 "$CLUSTER" restart-gateway 1 --kill ;;
    presence:1) python3 "$CLUSTER" kill-presence --mid-sweep --timeout 45 ;;
    presence:2) python3 "$CLUSTER" restart-presence ;;
    # The survivor takes the sweep lease over once it is older than TTL/2.
    presence:3) "${check[@]}" "${view[@]}" ;;
    freeze:0) python3 "$CLUSTER" freeze-gateway 1 --seconds 30 ;;
    freeze:1) "${check[@]}" "${view[@]}" ;;
    *)
        echo "faults.sh: $fault has no step $run" >&2
        return 2
        ;;
    esac
}
if [ "${1:-}" = step ]; then
    shift
    [ $# = 4 ] || { echo "usage: $0 step FAULT RUN CHANNELS CLIENTS" >&2; exit 2; }
    step "$@"
    exit
fi

SCALE=${1:-small}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
LOADTEST=$BIN_DIR/switchboard-loadtest
OBSERVER=$ROOT/deploy/local/presence-observer.js
export SWITCHBOARD_BIN_DIR=$BIN_DIR
FAULTS=${FAULTS:-nats presence freeze}

# Per fault: subscribers per channel and each publisher's rate, the step times
# (seconds after publishing starts) and the publishing time, which covers the fault;
# the presence check may run on past it, the clients still connected.
case "$SCALE" in
small)
    CHANNELS=3 EXTRA=()
    # The presence run's dead gateway holds ~300 members: a sweep of 100 takes ~20 ms,
    # less than one poll of kill-presence --mid-sweep.
    declare -A SUBSCRIBERS=([nats]=100 [presence]=300 [freeze]=100)
    declare -A RATE=([nats]=20 [presence]=5 [freeze]=20)
    declare -A TIMES=([nats]=3,10,14 [presence]=2,3,4,5 [freeze]=3,4)
    declare -A DURATION=([nats]=20 [presence]=40 [freeze]=40)
    ;;
large)
    # As rolling-restart.sh large: HAProxy's maxconn (9,500) and the file descriptor
    # limit bound the client count.
    CHANNELS=6 EXTRA=(--connect-rate 1000)
    declare -A SUBSCRIBERS=([nats]=1000 [presence]=1000 [freeze]=1000)
    declare -A RATE=([nats]=2 [presence]=2 [freeze]=2)
    declare -A TIMES=([nats]=5,15,20 [presence]=5,6,7,8 [freeze]=5,6)
    declare -A DURATION=([nats]=30 [presence]=50 [freeze]=50)
    BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
    ;;
*)
    echo "usage: $0 small|large" >&2
    exit 2
    ;;
esac

for bin in "$LOADTEST" "$BIN_DIR/switchboard-gateway" "$BIN_DIR/switchboard-presence"; do
    [ -x "$bin" ] || { echo "faults.sh: $bin not found; build it first" >&2; exit 1; }
done
command -v node >/dev/null || { echo "faults.sh: node (20+) not found" >&2; exit 1; }
[ -d "$ROOT/tests/compat/node_modules/centrifuge" ] ||
    { echo "faults.sh: no centrifuge-js: run \`cd tests/compat && npm ci\`" >&2; exit 1; }

STATE=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-faults.XXXXXX")
export CLUSTER_DIR=$STATE/cluster
failed=0
observer=
cleanup() {
    if [ -n "$observer" ]; then
        kill "$observer" 2>/dev/null || true
        wait "$observer" 2>/dev/null || true
    fi
    if { [ "$failed" = 1 ] && [ "${KEEP_CLUSTER:-}" = 1 ]; } || [ "${KEEP_CLUSTER:-}" = always ]; then
        python3 "$CLUSTER" down --keep-logs >/dev/null 2>&1 || true
        echo "faults.sh: logs kept in $STATE" >&2
    else
        python3 "$CLUSTER" down >/dev/null 2>&1 || true
        rm -rf "$STATE"
    fi
}
trap cleanup EXIT
# The tool, HAProxy and the gateways hold thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== faults ($SCALE): starting the local cluster" >&2
python3 "$CLUSTER" up >"$STATE/up.txt"
read -r PORT KEY GATEWAY3 < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))
print(c["port"], c["api_key"], c["gateways"][2]["port"])' "$CLUSTER_DIR/cluster.json")
OBSERVER_URL="ws://127.0.0.1:$GATEWAY3/connection/websocket"

# Starts the observer on gateway 3 and waits until it is subscribed to every channel.
start_observer() {
    local name=$1 ready=$STATE/$1.observer-ready
    node "$OBSERVER" "$OBSERVER_URL" --channel-prefix "chat:faults-$name-" \
        --channels "$CHANNELS" --ready-file "$ready" --settle 10 \
        --view-file "$STATE/$name.observer-view.json" \
        >"$STATE/$name.observer.json" 2>"$STATE/$name.observer.log" &
    observer=$!
    local deadline=$((SECONDS + 30))
    until [ -e "$ready" ]; do
        if ! kill -0 "$observer" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "faults.sh: the presence observer did not subscribe:" >&2
            cat "$STATE/$name.observer.log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Stops the observer (it settles for up to 10 s) and judges what it saw.
stop_observer() {
    local name=$1 rc=0 deadline=$((SECONDS + 30))
    kill -TERM "$observer"
    while kill -0 "$observer" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.1
    done
    kill -KILL "$observer" 2>/dev/null || true
    wait "$observer" || rc=$?
    observer=
    local report
    report=$(cat "$STATE/$name.observer.json")
    echo "   presence observer: ${report:-no report}" >&2
    if [ "$rc" != 0 ]; then
        echo "faults.sh: $name: the presence observer failed (exit $rc): a leave announced twice," \
            "or its connection dropped; its log:" >&2
        tail -n 20 "$STATE/$name.observer.log" >&2
        return 1
    fi
    # Reported, not judged: join and leave pushes are at most once.
    if python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1])["still_in"] else 1)' "$report"; then
        echo "   warning: the observer saw clients join whose leave never came (still_in)" >&2
    fi
}

# The presence fault's verdict on "mid-sweep": members of the dead gateway still
# present when the check began, a second or two after the kill (the survivor takes
# the lease over only once it is TTL/2 old), were left over by the killed sweeper.
mid_sweep_note() {
    python3 - "$CLUSTER_DIR/events.jsonl" "chat:faults-presence-" "$1" <<'EOF' >&2 || true
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
last = lambda kind: next((e for e in reversed(events) if e["event"] == kind), None)
gateway, kill, check = last("restart-gateway"), last("kill-presence"), last("check-presence")
if not (gateway and kill and check and check["prefix"] == sys.argv[2]) or None in check["first"]:
    print("   mid-sweep: not known")
else:
    left = sum(check["first"]) - len(check["first"]) * int(sys.argv[3])
    print(f"   mid-sweep: {'yes' if left > 0 else 'no (the sweep was over)'}: the dead gateway "
          f"held {gateway['connections']} members, the killed replica had expired "
          f"{kill['expired']} when last read, {left} were left over after the kill")
EOF
}

declare -A TITLE=(
    [nats]="Fault: the NATS node leading the stream killed (kill -9) and restarted under fan-out"
    [presence]="Fault: presence replica killed (kill -9) mid-sweep of a killed gateway's members, under fan-out"
    [freeze]="Fault: gateway frozen (SIGSTOP) for 30 s, longer than the presence TTL, under fan-out"
)
declare -A NOTE=(
    [nats]="kill -9 of the NATS node (of 3, R3 streams and presence buckets) that leads the chat namespace stream, restarted on the same store; then presence_stats of every channel must count exactly the subscribers plus one observer."
    [presence]="kill -9 of gateway 1 (restarted at once; its clients reconnect through HAProxy), then kill -9 of the presence replica whose switchboard_presence_expired_total starts rising (the one sweeping the dead gateway's members), then its restart; presence_stats must come back exact and a centrifuge-js observer must see no leave twice."
    [freeze]="SIGSTOP of gateway 1 for 30 s (presence TTL 20 s: the sweep expires its members meanwhile), then SIGCONT; presence_stats must come back exact and a centrifuge-js observer must see no leave twice."
)

run() {
    local name=$1
    local prefix="chat:faults-$name-"
    # The observer is one more member of every channel.
    local clients=$((SUBSCRIBERS[$name] + 1))
    local bench=()
    if [ "$SCALE" = large ]; then
        bench=(--bench-md "$BENCH_MD" --bench-section "faults-$name" --bench-title "${TITLE[$name]}"
            --bench-note "Local cluster (\`make cluster\` topology: 3 NATS nodes with R3 streams, 2 presence replicas, 3 release gateways, HAProxy leastconn with /readyz checks) on the same machine as the load generator; every client and the publishers go through HAProxy's one port. ${NOTE[$name]} Command: \`make bench-rolling\` (deploy/local/faults.sh large).")
    fi
    echo "== faults ($SCALE): ${TITLE[$name]}" >&2
    start_observer "$name" || { failed=1; return 1; }
    # A relative path: the command is recorded in BENCHMARKS.md. Single quotes keep
    # $SWITCHBOARD_LOADTEST_HOOK_RUN for the hook's shell.
    local hook="deploy/local/faults.sh step $name \"\$SWITCHBOARD_LOADTEST_HOOK_RUN\" $CHANNELS $clients"
    local ok=1
    if ! "$LOADTEST" failover --url "ws://127.0.0.1:$PORT/connection/websocket" \
        --channels "$CHANNELS" --subscribers "${SUBSCRIBERS[$name]}" --publishers "$CHANNELS" \
        --rate "${RATE[$name]}" "${EXTRA[@]}" --payload 100 --via api --api-key "$KEY" \
        --channel-prefix "$prefix" --duration "${DURATION[$name]}" --drain 30 \
        --kill-command "$hook" --kill-at "${TIMES[$name]}" --hook-timeout 90 \
        --quiet --strict --target 'lost<=0' --target 'duplicates<=0' --target 'not_back<=0' \
        --target 'hook_failures<=0' \
        --json "$STATE/$name.json" "${bench[@]}"; then
        ok=0
        echo "faults.sh: $name: a target was missed (see the table above)" >&2
        python3 "$CLUSTER" status >&2 || true
    fi
    if [ "$name" = presence ]; then
        mid_sweep_note "$clients"
    fi
    stop_observer "$name" || ok=0
    # The load has gone: nothing may stay present (a member its gateway still refreshes).
    # Members whose removal failed wait for the sweep: 20-25 s, plus its length.
    if ! python3 "$CLUSTER" check-presence --channel-prefix "$prefix" --channels "$CHANNELS" \
        --expect-clients 0 --timeout 60; then
        ok=0
        echo "faults.sh: $name: members left behind after every client went" >&2
    fi
    if [ "$ok" = 0 ]; then
        failed=1
        return 1
    fi
}

for fault in $FAULTS; do
    [ -n "${TITLE[$fault]:-}" ] || { echo "faults.sh: unknown fault $fault" >&2; exit 2; }
    run "$fault" || true
done
if [ "$failed" = 1 ]; then
    exit 3
fi
echo "== faults ($SCALE): every run lost nothing, got every client back and kept presence exact" >&2
