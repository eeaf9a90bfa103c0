#!/usr/bin/env bash
# `make bench-peers`: the Pusher-protocol load suite against sockudo 5.2 (a benchmark
# peer, deploy/peers/) and against a fresh standalone gateway, with the same
# switchboard-loadtest commands, runs interleaved (sockudo, gateway, sockudo, ...) so
# both see the same machine. Each run gets a fresh server. The section
# <!-- bench:peers --> of BENCHMARKS.md is rewritten with the commands and a table
# computed from the runs' --json summaries (loadtest/bench/peers_table.py), targets
# included. Not part of `make test`: installing sockudo builds it from crates.io
# (about 20 minutes on 2 cores, once). Traffic stays on 127.0.0.1; every run is
# bounded by --duration and --setup-timeout.
#
# Environment: CARGO (default cargo), CARGO_TARGET_DIR (default ./target), BENCH_MD
# (default BENCHMARKS.md), PEERS_DIR (see deploy/peers/sockudo.sh), PEERS_RUNS (runs
# per shape and server, default 2), PEERS_ONLY (shapes, space-separated: connect-10k
# fanout-5k fanout-10k same-5k same-10k), PEERS_KEEP (a directory to keep the
# summaries in; default: a temp dir removed at the end).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
RUNS=${PEERS_RUNS:-2}
ONLY=${PEERS_ONLY:-connect-10k fanout-5k fanout-10k same-5k same-10k}
GATEWAY=$TARGET_DIR/release/switchboard-gateway
LOADTEST=$TARGET_DIR/release/switchboard-loadtest
SOCKUDO=deploy/peers/sockudo.sh
WORK=$(mktemp -d)
OUT=${PEERS_KEEP:-$WORK/runs}
mkdir -p "$OUT"
GW_PID=

cleanup() {
    stop_gateway
    "$SOCKUDO" stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_gateway, stop_gateway, replace_section
. loadtest/bench/lib.sh

echo "== building release binaries" >&2
"$CARGO" build --release -p switchboard-gateway -p switchboard-loadtest >&2
echo "== installing sockudo (once)" >&2
"$SOCKUDO" install >&2

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PUSHER=(--protocol pusher --pusher-app-id app-id --pusher-app-key app-key
    --pusher-app-secret app-secret)
declare -A SHAPE TITLE
SHAPE[connect-10k]="connect --connections 10000 --connect-rate 20000 --concurrency 200 --duration 10"
TITLE[connect-10k]="idle 10,000"
SHAPE[fanout-5k]="fanout --channels 1 --subscribers 5000 --publishers 1 --rate 20 --payload 100 --via api --duration 30 --concurrency 200"
TITLE[fanout-5k]="fan-out 5,000 × 20 msg/s asked"
SHAPE[fanout-10k]="fanout --channels 1 --subscribers 10000 --publishers 1 --rate 60 --payload 100 --via api --duration 15 --concurrency 200"
TITLE[fanout-10k]="fan-out 10,000 × 60 msg/s asked"
# Loads both servers sustain (sockudo's publish answers take 50-150 ms at these
# sizes and the publisher waits for each), for p99 at the same load.
SHAPE[same-5k]="fanout --channels 1 --subscribers 5000 --publishers 1 --rate 10 --payload 100 --via api --duration 30 --concurrency 200"
TITLE[same-5k]="same load: 5,000 × 10 msg/s"
SHAPE[same-10k]="fanout --channels 1 --subscribers 10000 --publishers 1 --rate 5 --payload 100 --via api --duration 30 --concurrency 200"
TITLE[same-10k]="same load: 10,000 × 5 msg/s"

# one SERVER SHAPE RUN: a fresh server, one loadtest run, its summary in $OUT.
one() {
    local server=$1 shape=$2 i=$3 url pid
    if [ "$server" = sockudo ]; then
        local port
        port=$("$SOCKUDO" start)
        pid=$("$SOCKUDO" pid)
        url="ws://127.0.0.1:$port"
    else
        start_gateway
        pid=$GW_PID
        url="ws://127.0.0.1:$PORT"
    fi
    echo "== $shape run $i: $server" >&2
    # shellcheck disable=SC2086 # the shape is a word list
    if ! "$LOADTEST" ${SHAPE[$shape]} "${PUSHER[@]}" --url "$url" --server-pid "$pid" \
        --quiet --json "$OUT/$server-$shape-$i.json" >"$OUT/$server-$shape-$i.txt" 2>&1; then
        echo "   failed: $(tail -n 3 "$OUT/$server-$shape-$i.txt")" >&2
    fi
    if [ "$server" = sockudo ]; then "$SOCKUDO" stop >&2; else stop_gateway; fi
}

for shape in connect-10k fanout-5k fanout-10k same-5k same-10k; do
    case " $ONLY " in *" $shape "*) ;; *) continue ;; esac
    for i in $(seq 1 "$RUNS"); do
        one sockudo "$shape" "$i"
        one switchboard "$shape" "$i"
    done
done

{
    echo "<!-- bench:peers begin (written by loadtest/bench/peers.sh; edits inside are overwritten) -->"
    echo "### sockudo 5.2 and Switchboard, Pusher clients, one sitting (\`make bench-peers\`)"
    echo
    echo "The same \`switchboard-loadtest\` command against each server, with"
    echo "\`${PUSHER[*]} --url ws://127.0.0.1:PORT --server-pid PID\`:"
    echo
    echo '```sh'
    for shape in connect-10k fanout-5k fanout-10k same-5k same-10k; do
        case " $ONLY " in *" $shape "*) echo "switchboard-loadtest ${SHAPE[$shape]}    # $shape" ;; esac
    done
    echo '```'
    echo
    echo "Servers, each started fresh for each run, runs interleaved: sockudo 5.2.0 (\`deploy/peers/sockudo.sh start\`: features \`local\`, local adapter, rate limits off, \`RUST_LOG=warn\`) and \`switchboard-gateway --config config/dev.toml --listen 127.0.0.1:0 --log warn\` (release, standalone), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates 2>/dev/null || echo ' with uncommitted changes under crates/'). Measured $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores shared with the load tool."
    echo
    for shape in connect-10k fanout-5k fanout-10k same-5k same-10k; do
        case " $ONLY " in *" $shape "*) printf '%s\t%s\n' "$shape" "${TITLE[$shape]}" ;; esac
    done | python3 loadtest/bench/peers_table.py "$OUT" "$RUNS"
    echo "<!-- bench:peers end -->"
} >"$WORK/section.md"
replace_section peers "$WORK/section.md"
echo "== wrote $BENCH_MD (section peers)" >&2
