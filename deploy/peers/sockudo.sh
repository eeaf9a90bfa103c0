#!/usr/bin/env bash
# sockudo 5.2.0 (a Rust Pusher Channels server from crates.io) as a benchmark peer:
# one node, local adapter, memory app manager and cache, no Redis/NATS, one app
# (app-id / app-key / app-secret, client events on, at most 20,000 connections).
# The config is deploy/peers/sockudo.json; `start` writes a copy with the ports
# filled in under the run directory and starts sockudo on 127.0.0.1 only.
#
#   sockudo.sh install        build it: cargo install into $PEERS_DIR/sockudo
#                             (nice -n 19, -j $SOCKUDO_JOBS: ~20 min on a busy
#                             2-core machine; needs protoc, from Debian's
#                             protobuf-compiler, which it installs when root)
#   sockudo.sh [start] [PORT] start it in the background on PORT (default: a free
#                             port), wait until GET /up/app-id answers 200, print
#                             the port on stdout (everything else goes to stderr)
#   sockudo.sh stop           stop the one `start` started (SIGTERM, then SIGKILL)
#   sockudo.sh status         print the port if it is running, exit 1 otherwise
#   sockudo.sh pid            print its process id if it is running, exit 1 otherwise
#
# Pusher endpoints once started: ws://127.0.0.1:PORT/app/app-key (pusher-js:
# wsHost 127.0.0.1, wsPort PORT, forceTLS false) and POST
# http://127.0.0.1:PORT/apps/app-id/events; Prometheus metrics on
# http://127.0.0.1:METRICS_PORT/metrics (the port is in $SOCKUDO_RUN_DIR/metrics_port).
#
# Environment:
#   PEERS_DIR            where peers are built and run (default: .peers in the repo)
#   SOCKUDO_BIN          the binary (default: $PEERS_DIR/sockudo/bin/sockudo)
#   SOCKUDO_RUN_DIR      config, log, pid and port files (default: $PEERS_DIR/run/sockudo)
#   SOCKUDO_PORT         the port when none is given as an argument
#   SOCKUDO_METRICS      0 turns the metrics listener off (default 1)
#   SOCKUDO_METRICS_PORT its port (default: a free port)
#   SOCKUDO_LOG          RUST_LOG for sockudo (default: warn, like the gateway's --log warn)
#   SOCKUDO_START_TIMEOUT seconds to wait for it to answer (default 30)
#   SOCKUDO_JOBS         cargo -j for install (default 1); CARGO (default cargo)
#   SOCKUDO_FEATURES     cargo features for install (default: local, i.e. no v2, no
#                        OpenTelemetry; the default features are local,v2,opentelemetry)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VERSION=5.2.0
PEERS_DIR=${PEERS_DIR:-$ROOT/.peers}
case "$PEERS_DIR" in /*) ;; *) PEERS_DIR=$PWD/$PEERS_DIR ;; esac
SOCKUDO_BIN=${SOCKUDO_BIN:-$PEERS_DIR/sockudo/bin/sockudo}
RUN_DIR=${SOCKUDO_RUN_DIR:-$PEERS_DIR/run/sockudo}
case "$RUN_DIR" in /*) ;; *) RUN_DIR=$PWD/$RUN_DIR ;; esac
CONFIG_TEMPLATE=$HERE/sockudo.json
PYTHON=${PYTHON:-python3}

log() { echo "sockudo.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# The pid in the pid file, if that process is alive and is a sockudo.
running_pid() {
    local pid
    [ -f "$RUN_DIR/sockudo.pid" ] || return 1
    pid=$(cat "$RUN_DIR/sockudo.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q sockudo || return 1
    echo "$pid"
}

free_port() {
    "$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd_install() {
    local cargo=${CARGO:-cargo} features=${SOCKUDO_FEATURES:-local} start end
    mkdir -p "$PEERS_DIR"
    if [ -x "$PEERS_DIR/sockudo/bin/sockudo" ] &&
        "$PEERS_DIR/sockudo/bin/sockudo" --version 2>/dev/null | grep -qx "sockudo $VERSION"; then
        log "sockudo $VERSION already installed: $PEERS_DIR/sockudo/bin/sockudo"
        return 0
    fi
    # metrics-exporter-tcp (a dependency whatever the features) runs prost-build,
    # which needs protoc.
    if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing protobuf-compiler (protoc) with apt-get"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >&2
        else
            die "the build needs protoc: apt-get install protobuf-compiler (or set PROTOC)"
        fi
    fi
    log "building sockudo $VERSION (features: $features) into $PEERS_DIR/sockudo"
    start=$(date +%s)
    CARGO_TARGET_DIR=$PEERS_DIR/target nice -n 19 "$cargo" install sockudo \
        --version "$VERSION" --locked --no-default-features --features "$features" \
        --root "$PEERS_DIR/sockudo" -j "${SOCKUDO_JOBS:-1}"
    end=$(date +%s)
    log "built in $((end - start)) s: $PEERS_DIR/sockudo/bin/sockudo"
}

cmd_start() {
    local port=${1:-${SOCKUDO_PORT:-}} metrics=${SOCKUDO_METRICS:-1} metrics_port pid
    local timeout=${SOCKUDO_START_TIMEOUT:-30} deadline
    [ -x "$SOCKUDO_BIN" ] || die "no sockudo at $SOCKUDO_BIN: run '$0 install' (or set SOCKUDO_BIN / PEERS_DIR)"
    if pid=$(running_pid); then
        die "already running (pid $pid, port $(cat "$RUN_DIR/port")): '$0 stop' first"
    fi
    [ -n "$port" ] || port=$(free_port)
    case "$port" in '' | *[!0-9]*) die "not a port: $port" ;; esac
    metrics_port=${SOCKUDO_METRICS_PORT:-}
    if [ "$metrics" = 1 ] && [ -z "$metrics_port" ]; then
        metrics_port=$(free_port)
        [ "$metrics_port" != "$port" ] || metrics_port=$(free_port)
    fi

    mkdir -p "$RUN_DIR"
    # sockudo first reads config/config.{toml,json} from its working directory; the
    # run directory has none, so only the config written here applies.
    rm -rf "$RUN_DIR/config" "$RUN_DIR/sockudo.pid" "$RUN_DIR/port" "$RUN_DIR/metrics_port"
    "$PYTHON" - "$CONFIG_TEMPLATE" "$RUN_DIR/config.json" "$port" "$metrics" "${metrics_port:-0}" <<'PY'
import json, sys
src, dst, port, metrics, metrics_port = sys.argv[1:]
with open(src) as f:
    cfg = json.load(f)
cfg["port"] = int(port)
cfg["metrics"]["enabled"] = metrics == "1"
cfg["metrics"]["port"] = int(metrics_port)
with open(dst, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
PY

    # Use every file descriptor the hard limit allows (sockudo inherits it).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    # A clean environment: sockudo applies dozens of variables (PORT, HOST, DEBUG,
    # REDIS_URL, SOCKUDO_DEFAULT_APP_*, ...) over its config file.
    (cd "$RUN_DIR" && exec env -i PATH="$PATH" HOME="${HOME:-/tmp}" RUST_LOG="${SOCKUDO_LOG:-warn}" \
        "$SOCKUDO_BIN" --config "$RUN_DIR/config.json" \
        </dev/null >"$RUN_DIR/sockudo.log" 2>&1) &
    pid=$!
    echo "$pid" >"$RUN_DIR/sockudo.pid"

    # 200 from /up/app-id means: listening on our port, and our app was loaded (a
    # config that fails to load leaves sockudo on its defaults, port 6001, no app).
    deadline=$(($(date +%s) + timeout))
    until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/up/app-id" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$RUN_DIR/sockudo.log" >&2 || true
            rm -f "$RUN_DIR/sockudo.pid"
            die "sockudo exited before answering on port $port (log: $RUN_DIR/sockudo.log)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            tail -n 20 "$RUN_DIR/sockudo.log" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$RUN_DIR/sockudo.pid"
            die "sockudo did not answer on port $port within ${timeout}s (log: $RUN_DIR/sockudo.log)"
        fi
        sleep 0.2
    done
    echo "$port" >"$RUN_DIR/port"
    [ "$metrics" = 1 ] && echo "$metrics_port" >"$RUN_DIR/metrics_port"
    log "sockudo $VERSION pid $pid on 127.0.0.1:$port${metrics_port:+, metrics on 127.0.0.1:$metrics_port}; log $RUN_DIR/sockudo.log"
    echo "$port"
}

cmd_stop() {
    local pid
    if ! pid=$(running_pid); then
        log "not running"
        rm -f "$RUN_DIR/sockudo.pid"
        return 0
    fi
    kill -TERM "$pid"
    # shutdown_grace_period in sockudo.json is 2 s.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/sockudo.pid" "$RUN_DIR/port" "$RUN_DIR/metrics_port"
    log "stopped pid $pid"
}

cmd_status() {
    local pid
    pid=$(running_pid) || { log "not running"; return 1; }
    log "running: pid $pid"
    cat "$RUN_DIR/port"
}

case "${1:-start}" in
install) cmd_install ;;
start) shift $(($# > 0 ? 1 : 0)); cmd_start "$@" ;;
stop) cmd_stop ;;
status) cmd_status ;;
pid) running_pid || { log "not running"; exit 1; } ;;
[0-9]*) cmd_start "$@" ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) die "unknown command: $1 (install, start [PORT], stop, status, pid)" ;;
esac
