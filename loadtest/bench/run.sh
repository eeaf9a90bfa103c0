#!/usr/bin/env bash
# The standard benchmark suite behind `make bench`: builds release binaries, starts a
# fresh standalone gateway (config/dev.toml, port 0) for each run, runs
# switchboard-loadtest against it, and rewrites the matching sections of
# BENCHMARKS.md (between their <!-- bench:NAME --> markers) with the machine, the
# exact command and the numbers. Traffic stays on 127.0.0.0/8; every run is bounded
# by --duration, --setup-timeout and --drain.
#
# Environment: CARGO (default cargo), CARGO_TARGET_DIR (default ./target),
# BENCH_MD (default BENCHMARKS.md), BENCH_ONLY (run only the named sections,
# space-separated: idle sse-idle fanout-10k sse-fanout-10k api-5k floor-5k protobuf-1k
# cluster-10k cluster-1ch cluster-many cluster-failover presence proxy-connect
# direct-connect proxy-publish direct-publish webhooks-churn webhooks-cluster).
# The proxy sections need node (the local backend, loadtest/bench/proxy-backend.js).
# The cluster sections need `nats-server` (with JetStream) on the PATH; without it
# they say so in BENCHMARKS.md instead of numbers.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
ONLY=${BENCH_ONLY:-idle sse-idle fanout-10k sse-fanout-10k api-5k floor-5k protobuf-1k cluster-10k cluster-1ch cluster-many cluster-failover presence proxy-connect direct-connect proxy-publish direct-publish webhooks-churn webhooks-cluster}
PRESENCE=$TARGET_DIR/release/switchboard-presence
GATEWAY=$TARGET_DIR/release/switchboard-gateway
LOADTEST=$TARGET_DIR/release/switchboard-loadtest
WORK=$(mktemp -d)
GW_PID=
PRESENCE_PID=
GW1_PID=
GW2_PID=
NATS_PID=

cleanup() {
    stop_gateway
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building release binaries" >&2
"$CARGO" build --release -p switchboard-gateway -p switchboard-presence -p switchboard-loadtest >&2

# Use every file descriptor the hard limit allows (the gateway inherits it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# start_gateway, stop_gateway, announced, replace_section, table_section
. loadtest/bench/lib.sh

PRESENCE_GRPC='s/^switchboard-presence listening on \([0-9.:]*\) http .*/\1/p'

# The port of the gateway $2 writing to $1 (its stderr in $1.err).
port_of() {
    announced "$1" "$2" "$GATEWAY_PORT" "$1.err"
}

# One nats-server with JetStream (temp store, dynamic port) and two gateways over it.
start_cluster() {
    rm -rf "$WORK/nats"
    nats-server -a 127.0.0.1 -p -1 -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
    NATS_PID=$!
    NATS_PORT=
    for _ in $(seq 1 100); do
        NATS_PORT=$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/nats.log")
        [ -n "$NATS_PORT" ] && break
        sleep 0.1
    done
    [ -n "$NATS_PORT" ] || { cat "$WORK/nats.log" >&2; exit 1; }
    for i in 1 2; do
        "$GATEWAY" --config "${GATEWAY_CONFIG:-config/dev.toml}" --listen 127.0.0.1:0 --log warn \
            --nats-url "nats://127.0.0.1:$NATS_PORT" >"$WORK/gw$i.out" 2>"$WORK/gw$i.out.err" &
        eval "GW${i}_PID=$!"
    done
    P1=$(port_of "$WORK/gw1.out" "$GW1_PID")
    P2=$(port_of "$WORK/gw2.out" "$GW2_PID")
}

stop_cluster() {
    local pid
    for pid in ${GW1_PID:-} ${GW2_PID:-}; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in ${GW1_PID:-} ${GW2_PID:-}; do
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${PRESENCE_PID:-}" ]; then
        kill "$PRESENCE_PID" 2>/dev/null || true
        wait "$PRESENCE_PID" 2>/dev/null || true
    fi
    if [ -n "${NATS_PID:-}" ]; then
        kill "$NATS_PID" 2>/dev/null || true
        wait "$NATS_PID" 2>/dev/null || true
    fi
    GW1_PID= GW2_PID= NATS_PID= PRESENCE_PID=
}

# cluster_run NAME TITLE LOADTEST-ARGS... ({P1} {P2} {GW1_PID} in arguments are replaced)
cluster_run() {
    local name=$1 title=$2
    shift 2
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $title" >&2
    if ! command -v nats-server >/dev/null; then
        printf '%s\n' "<!-- bench:$name begin -->" "### $title" "" \
            "Not measured: \`nats-server\` was not installed on the machine that ran \`make bench\`." \
            "<!-- bench:$name end -->" >"$WORK/section.md"
        replace_section "$name" "$WORK/section.md"
        return 0
    fi
    start_cluster
    local args=() a
    for a in "$@"; do
        a=${a//\{P1\}/$P1}
        a=${a//\{P2\}/$P2}
        a=${a//\{GW1_PID\}/$GW1_PID}
        args+=("$a")
    done
    "$LOADTEST" "${args[@]}" --server-pid "$GW1_PID" --server-pid "$GW2_PID" --quiet \
        --json "$WORK/$name.json" \
        --bench-md "$BENCH_MD" --bench-section "$name" --bench-title "$title" \
        --bench-note "$CLUSTER_NOTE"
    stop_cluster
}

GATEWAY_NOTE="Server: \`switchboard-gateway --config config/dev.toml --listen 127.0.0.1:0\` (release build, standalone: in-memory broker and presence), started fresh for this run; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' with uncommitted changes under crates/')."

CLUSTER_NOTE="Servers: one \`nats-server -js\` ($(nats-server --version 2>/dev/null || echo 'not installed'), single node, temp store) and two \`switchboard-gateway --config config/dev.toml --listen 127.0.0.1:0 --nats-url nats://127.0.0.1:PORT\` (release build), all started fresh for this run on the same machine; the gateway CPU and RSS figures are the two gateways summed (NATS not included); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."

# run NAME TITLE LOADTEST-ARGS...
run() {
    local name=$1 title=$2
    shift 2
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $title" >&2
    start_gateway
    "$LOADTEST" "$@" --url "$URL" --server-pid "$GW_PID" --quiet \
        --json "$WORK/$name.json" \
        --bench-md "$BENCH_MD" --bench-section "$name" --bench-title "$title" \
        --bench-note "$GATEWAY_NOTE"
    stop_gateway
}

run idle "Idle: 19,000 connections on one gateway" \
    connect --connections 19000 --connect-rate 20000 --concurrency 200 --duration 10 \
    --target 'success_rate_percent>=100' --target 'rss_per_connection_bytes<=4096' \
    --target 'connect_rate_per_s>=10000'

run fanout-10k "Fan-out efficiency: one channel, 10,000 subscribers" \
    fanout --channels 1 --subscribers 10000 --publishers 1 --rate 60 --payload 100 \
    --via api --duration 15 --concurrency 200 \
    --target 'cpu_us_per_delivery<=1' --target 'lost<=0' --target 'duplicates<=0' \
    --target 'out_of_order<=0'

# The same two runs with Centrifugo clients over server-sent events (the fallback
# centrifuge-js takes when WebSockets are blocked), next to the WebSocket rows.
run sse-idle "Idle: 19,000 SSE connections on one gateway" \
    connect --protocol sse --connections 19000 --connect-rate 20000 --concurrency 200 --duration 10 \
    --target 'success_rate_percent>=100'

run sse-fanout-10k "Fan-out efficiency over SSE: one channel, 10,000 subscribers" \
    fanout --protocol sse --channels 1 --subscribers 10000 --publishers 1 --rate 60 --payload 100 \
    --via api --duration 15 --concurrency 200 \
    --target 'lost<=0' --target 'duplicates<=0' --target 'out_of_order<=0'

run api-5k "5,000 subscribers, 20 messages/s, 100-byte payload, HTTP API" \
    fanout --channels 1 --subscribers 5000 --publishers 1 --rate 20 --payload 100 \
    --via api --duration 30 --concurrency 200 \
    --target 'p99_ms<=5' --target 'lost<=0' --target 'out_of_order<=0'

# The floor under api-5k: the same fan-out with no server at all (plain write(2)
# to 5,000 loopback sockets from 2 threads, read by tokio tasks as the tool reads).
floor_run() {
    local name=floor-5k title="The floor: 5,000 loopback sockets, 20 messages/s, 100 bytes, no server"
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $title" >&2
    local args=(floor --sockets 5000 --writers 2 --messages 600 --rate 20 --payload 100)
    "$LOADTEST" "${args[@]}" --json "$WORK/$name.json" >"$WORK/$name.txt"
    {
        echo "<!-- bench:$name begin (written by loadtest/bench/run.sh; edits inside are overwritten) -->"
        echo "### $title"
        echo
        echo '```sh'
        echo "switchboard-loadtest ${args[*]}"
        echo '```'
        echo
        echo "No server: the tool writes to and reads from itself on the same machine; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown). Measured $(date -u '+%Y-%m-%d %H:%M') UTC."
        echo
        echo '```text'
        sed -e '/^$/d' "$WORK/$name.txt"
        echo '```'
        echo "<!-- bench:$name end -->"
    } >"$WORK/section.md"
    replace_section "$name" "$WORK/section.md"
}

floor_run

run protobuf-1k "Protobuf clients, client publish: 10 channels × 100 subscribers" \
    fanout --protobuf --via client --channels 10 --subscribers 100 --publishers 2 --rate 50 \
    --payload 100 --duration 10 --target 'lost<=0' --target 'duplicates<=0'

cluster_run cluster-10k "Cluster: 10,000 subscribers over 2 gateways and NATS, 10 messages/s" \
    fanout --url 'ws://127.0.0.1:{P1}/connection/websocket' --url 'ws://127.0.0.1:{P2}/connection/websocket' \
    --api-addr '127.0.0.1:{P1}' --channels 1 --subscribers 10000 --rate 10 --payload 100 \
    --via api --duration 20 --concurrency 200 \
    --target 'p99_ms<=10' --target 'lost<=0' --target 'out_of_order<=0'

cluster_run cluster-1ch "Cluster throughput, one channel: 100 subscribers over 2 gateways, 4 publishers × 250/s" \
    fanout --url 'ws://127.0.0.1:{P1}/connection/websocket' --url 'ws://127.0.0.1:{P2}/connection/websocket' \
    --api-addr '127.0.0.1:{P1}' --channels 1 --subscribers 100 --publishers 4 --rate 250 --payload 100 \
    --via api --duration 20 --concurrency 200 \
    --target 'lost<=0' --target 'out_of_order<=0'

cluster_run cluster-many "Cluster throughput, many channels: 500 channels × 10 subscribers over 2 gateways, 4 publishers × 250/s" \
    fanout --url 'ws://127.0.0.1:{P1}/connection/websocket' --url 'ws://127.0.0.1:{P2}/connection/websocket' \
    --api-addr '127.0.0.1:{P1}' --channels 500 --subscribers 10 --publishers 4 --rate 250 --payload 100 \
    --via api --duration 20 --concurrency 200 \
    --target 'lost<=0' --target 'out_of_order<=0'

cluster_run cluster-failover "Failover: kill -9 one of 2 gateways holding 10,000 subscribers" \
    failover --url 'ws://127.0.0.1:{P1}/connection/websocket' --url 'ws://127.0.0.1:{P2}/connection/websocket' \
    --api-addr '127.0.0.1:{P2}' --channels 1 --subscribers 10000 --rate 10 --payload 100 \
    --via api --duration 20 --drain 20 --concurrency 200 \
    --kill-command 'kill -9 {GW1_PID}' --kill-at 5 \
    --target 'reconnect_p99_ms<=5000' --target 'lost<=0' --target 'duplicates<=0'

# The presence service: nats-server, one switchboard-presence (default 20 s TTL) and one
# gateway using it, whose subscriber counts the leaves once the tool stops refreshing.
presence_run() {
    local name=presence title="Presence service: 10,000 members of one gateway, 5,000 users"
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $title" >&2
    command -v nats-server >/dev/null || { echo "nats-server is not installed: skipping $name" >&2; return 0; }
    start_cluster
    kill "$GW2_PID" 2>/dev/null || true
    "$PRESENCE" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --log warn \
        --nats-url "nats://127.0.0.1:$NATS_PORT" >"$WORK/presence.out" 2>"$WORK/presence.err" &
    PRESENCE_PID=$!
    local grpc
    grpc=$(announced "$WORK/presence.out" "$PRESENCE_PID" "$PRESENCE_GRPC" "$WORK/presence.err")
    local args=(presence --presence-url "http://$grpc" --members 10000 --users 5000
        --url "ws://127.0.0.1:$P1/connection/websocket")
    "$LOADTEST" "${args[@]}" --server-pid "$PRESENCE_PID" --nats-pid "$NATS_PID" \
        --json "$WORK/$name.json" >"$WORK/$name.txt"
    table_section "$name" "$title" \
        "switchboard-loadtest ${args[*]} --server-pid PRESENCE_PID --nats-pid NATS_PID" \
        "Servers: one \`nats-server -js\` (single node, temp store), one \`switchboard-presence\` (release build, presence TTL 20 s) and one gateway (only its subscriber is used), all fresh, on the same machine as the tool; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)." \
        "$WORK/$name.txt"
    stop_cluster
}

presence_run

# The proxies' overhead: the same connects and client publications with and without
# the application backend deciding, one gateway and a local Node backend
# (loadtest/bench/proxy-backend.js) that answers at once. The gateway's config is
# config/dev.toml plus the [proxy] section and a "proxied" namespace.
BACKEND_PID=
proxy_backend() {
    node loadtest/bench/proxy-backend.js >"$WORK/backend.out" 2>"$WORK/backend.err" &
    BACKEND_PID=$!
    local port
    port=$(announced "$WORK/backend.out" "$BACKEND_PID" 's/^proxy backend on \([0-9]*\)$/\1/p' "$WORK/backend.err")
    {
        cat config/dev.toml
        printf '\n[proxy]\nconnect_endpoint = "http://127.0.0.1:%s/connect"\n' "$port"
        printf 'publish_endpoint = "http://127.0.0.1:%s/publish"\n' "$port"
        printf '\n[[namespaces]]\nname = "proxied"\nproxy_publish = true\nallow_subscribe_for_client = true\n'
    } >"$WORK/proxy.toml"
}

# proxy_run NAME TITLE LOADTEST-ARGS...: `run` against a gateway with the proxies.
proxy_run() {
    local name=$1
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    command -v node >/dev/null || { echo "== $name: skipped, node not found" >&2; return 0; }
    proxy_backend
    GATEWAY_CONFIG=$WORK/proxy.toml GATEWAY_NOTE="$PROXY_NOTE" run "$@"
    kill "$BACKEND_PID" 2>/dev/null || true
    wait "$BACKEND_PID" 2>/dev/null || true
}

PROXY_NOTE="Server: \`switchboard-gateway\` (release build, standalone) with config/dev.toml plus \`[proxy] connect_endpoint\` and \`publish_endpoint\` at a local Node backend (loadtest/bench/proxy-backend.js, answers at once) and a namespace \`proxied\` with \`proxy_publish = true\`, all fresh for this run on the same machine as the tool (backend CPU not included); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."

CONNECT_5K=(connect --connections 5000 --connect-rate 2000 --concurrency 100 --duration 5
    --target 'success_rate_percent>=100')
proxy_run proxy-connect "Connect proxy: 5,000 connections, each authenticated by the backend" \
    "${CONNECT_5K[@]}"
run direct-connect "Without the proxy: 5,000 anonymous connections" "${CONNECT_5K[@]}"

# Four publishers at 50/s each: one connection may send max_commands_per_second (100).
PUBLISH_200=(fanout --via client --channels 4 --subscribers 25 --publishers 4 --rate 50
    --payload 100 --duration 15 --concurrency 100 --target 'lost<=0')
proxy_run proxy-publish "Publish proxy: 200 client publications/s, each decided by the backend, 100 subscribers" \
    "${PUBLISH_200[@]}" --channel-prefix proxied:lt
run direct-publish "Without the proxy: 200 client publications/s, 100 subscribers" \
    "${PUBLISH_200[@]}" --channel-prefix chat:lt

# Webhooks while 10,000 presence members churn: the tool holds the members and is the
# app's webhook receiver. webhooks-churn: one standalone gateway (in-memory queue);
# webhooks-cluster: nats-server and two gateways, the members on the first, the jobs
# going through the JetStream work queue that both take from (2,000 members: see below).
webhooks_config() {
    local port=$1
    {
        cat config/dev.toml
        printf '\n[[pusher.apps]]\nid = "wh-id"\nkey = "wh-key"\nsecret = "wh-secret"\n'
        printf '\n[[pusher.apps.webhooks]]\nurl = "http://127.0.0.1:%s/webhooks"\n' "$port"
        printf 'event_types = ["member_added", "member_removed"]\n'
    } >"$WORK/webhooks.toml"
}

webhooks_run() {
    local name=$1 title=$2 mode=$3
    case " $ONLY " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name: $title" >&2
    if [ "$mode" = cluster ] && ! command -v nats-server >/dev/null; then
        echo "nats-server is not installed: skipping $name" >&2
        return 0
    fi
    local port url pids note
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    webhooks_config "$port"
    if [ "$mode" = cluster ]; then
        GATEWAY_CONFIG=$WORK/webhooks.toml start_cluster
        url="ws://127.0.0.1:$P1"
        note="Servers: one \`nats-server -js\` (single node, temp store) and two \`switchboard-gateway\` (release build, config/dev.toml plus an app whose webhook is the tool's receiver); the members connect to the first, both take jobs from the JetStream work queue; all fresh, on the same machine as the tool"
    else
        GATEWAY_CONFIG=$WORK/webhooks.toml start_gateway
        url="ws://127.0.0.1:$PORT"
        note="Server: \`switchboard-gateway\` (release build, standalone: in-memory queue) with config/dev.toml plus an app whose webhook is the tool's receiver, fresh for this run on the same machine as the tool"
    fi
    local args=(webhooks --members 10000 --channels 500 --lifetime 30 --duration 60
        --pusher-app-key wh-key --pusher-app-secret wh-secret)
    # In cluster mode each Pusher presence subscription lists the channel's members and
    # counts them in the presence bucket (filtered reads NATS answers by scanning): on
    # this machine the bucket of 10,000 members joining at 1,000/s saturates nats-server
    # before any webhook is involved, so the cluster row holds 2,000.
    if [ "$mode" = cluster ]; then
        args=(webhooks --members 2000 --channels 100 --lifetime 60 --duration 60 --join-rate 100
            --pusher-app-key wh-key --pusher-app-secret wh-secret)
    fi
    "$LOADTEST" "${args[@]}" --url "$url" --listen "127.0.0.1:$port" \
        --json "$WORK/$name.json" >"$WORK/$name.txt"
    table_section "$name" "$title" \
        "switchboard-loadtest ${args[*]} --url ws://GATEWAY --listen RECEIVER" \
        "$note; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)." \
        "$WORK/$name.txt"
    if [ "$mode" = cluster ]; then stop_cluster; else stop_gateway; fi
}

webhooks_run webhooks-churn "Webhooks: 10,000 presence members churning, one gateway" standalone
webhooks_run webhooks-cluster "Webhooks: 2,000 presence members churning, two gateways over NATS" cluster

echo "== wrote $BENCH_MD" >&2
