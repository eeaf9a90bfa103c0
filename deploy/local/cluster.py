#!/usr/bin/env python3
"""The Kubernetes topology as local processes: 3 NATS nodes (a JetStream cluster),
2 presence replicas, 3 gateways and HAProxy in front of the gateways on one port.

Every process runs with the configuration files the manifests use
(deploy/k8s/base/config/), with addresses, ports and the store passed as flags the
way the manifests pass them as environment variables. Ports are chosen free at
start (below the ephemeral range, so that a restarted gateway gets its port back);
pids, logs and the NATS stores live in the state directory (default .cluster/).

    cluster.py up                 start everything, wait until ready, print the URLs
    cluster.py down               stop everything (SIGTERM, then SIGKILL), remove state
    cluster.py status             what runs where
    cluster.py restart-gateway N  restart gateway N (1-based; --run R picks R mod 3 + 1)
                                  with SIGTERM (drain) or --kill (kill -9), wait until
                                  it is ready again

Environment: CLUSTER_DIR (state directory), CLUSTER_PORT (HAProxy's port; 0 or unset:
a free one), SWITCHBOARD_BIN_DIR (where the binaries are; default
${CARGO_TARGET_DIR:-target}/release), SWITCHBOARD_API_KEY, and any other
SWITCHBOARD_<OPTION> for the gateways (e.g. SWITCHBOARD_DRAIN_WINDOW=2), recorded at
`up` so that restarts use the same settings. Only the Python standard library.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "k8s" / "base" / "config"
GATEWAYS = 3
PRESENCE = 2
NATS = 3
# The dev overlay's generated secrets (deploy/k8s/overlays/dev/kustomization.yaml).
DEV_API_KEY = "dev-api-key"
DEV_TOKEN_SECRET = "dev-token-secret"
# Ports are picked from here: below net.ipv4.ip_local_port_range (32768+), where the
# load generator's and HAProxy's outgoing sockets cannot take a port a restarting
# gateway needs back.
PORT_RANGE = (20000, 32000)
READY_TIMEOUT = 60.0
# Variables passed through to the gateways (recorded at `up`).
PASSTHROUGH_PREFIX = "SWITCHBOARD_"
NOT_PASSED = {"SWITCHBOARD_CONFIG", "SWITCHBOARD_BIN_DIR", "SWITCHBOARD_LOADTEST_HOOK_RUN"}


class ClusterError(Exception):
    pass


def state_dir(args):
    return Path(args.dir or os.environ.get("CLUSTER_DIR") or ROOT / ".cluster").resolve()


def bin_dir():
    explicit = os.environ.get("SWITCHBOARD_BIN_DIR")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    return Path(target) / "release"


def free_ports(count, taken=()):
    """Ports nobody listens on now, from PORT_RANGE, distinct."""
    ports, seen = [], set(taken)
    for _ in range(count * 200):
        if len(ports) == count:
            return ports
        port = random.randint(*PORT_RANGE)
        if port in seen:
            continue
        seen.add(port)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    raise ClusterError(f"found only {len(ports)} of {count} free ports in {PORT_RANGE}")


def wait_port_free(port, timeout=30.0):
    """Waits until 127.0.0.1:port can be bound the way the gateway binds it
    (SO_REUSEADDR). After kill -9 the dead gateway's accepted sockets linger in
    FIN_WAIT until their peers (HAProxy) close them, and until then the port
    cannot be bound even with SO_REUSEADDR."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError as e:
                if time.monotonic() >= deadline:
                    raise ClusterError(f"port {port} still busy after {timeout:.0f} s: {e}")
        time.sleep(0.05)


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def http_status(url, timeout=1.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


def wait_ready(name, url, pid, log, timeout=READY_TIMEOUT):
    """Polls url until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(url) == 200:
            return
        if not alive(pid):
            raise ClusterError(f"{name} exited while starting; last lines of {log}:\n{tail(log)}")
        time.sleep(0.1)
    raise ClusterError(f"{name} not ready at {url} after {timeout:.0f} s; see {log}:\n{tail(log)}")


def tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(proc, state):
    """Starts a process described by proc (argv, env, log), detached from us."""
    log = open(proc["log"], "ab")
    env = base_env()
    env.update(proc.get("env", {}))
    child = subprocess.Popen(
        proc["argv"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=state,
        start_new_session=True,
    )
    log.close()
    proc["pid"] = child.pid
    return child.pid


def base_env():
    """A clean environment: PATH, HOME, locale; no stray SWITCHBOARD_* options."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}


def stop(proc, sig=signal.SIGTERM, timeout=30.0):
    """Signals a process and waits (bounded) for it to exit; SIGKILL after timeout."""
    pid = proc.get("pid")
    if not alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)


def load(state):
    path = state / "cluster.json"
    if not path.exists():
        raise ClusterError(f"no cluster in {state} (start one with `make cluster`)")
    return json.loads(path.read_text())


def save(state, cluster):
    tmp = state / "cluster.json.tmp"
    tmp.write_text(json.dumps(cluster, indent=2))
    tmp.replace(state / "cluster.json")


def haproxy_config(port, gateways):
    servers = "\n".join(
        f"    server gw{i + 1} 127.0.0.1:{g['port']} check" for i, g in enumerate(gateways)
    )
    return f"""# Written by deploy/local/cluster.py: HAProxy in front of the local gateways.
global
    maxconn 9500
    log stdout format raw local0 notice

defaults
    mode http
    log global
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # WebSocket connections: idle for long stretches between pings.
    timeout tunnel 1h
    timeout client-fin 5s
    timeout http-request 10s
    # A gateway that refuses the connection (draining, or killed and not yet marked
    # down) costs a retry on another one, not a client error.
    retries 3
    option redispatch 1

frontend switchboard
    bind 127.0.0.1:{port}
    default_backend gateways

backend gateways
    balance leastconn
    # /readyz turns 503 (or the port closes) the moment a gateway starts draining.
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms fall 2 rise 2
{servers}
"""


def gateway_proc(state, bins, i, port, nats_urls, presence_urls, env):
    return {
        "name": f"gateway-{i + 1}",
        "port": port,
        "argv": [
            str(bins / "switchboard-gateway"),
            "--config", str(CONFIG / "gateway.toml"),
            "--listen", f"127.0.0.1:{port}",
            "--nats-url", ",".join(nats_urls),
            "--presence-url", ",".join(presence_urls),
            # As the dev overlay: anonymous connections allowed, dev secrets.
            "--allow-anonymous-connect-without-token",
        ],
        "env": env,
        "log": str(state / "logs" / f"gateway-{i + 1}.log"),
        "ready": f"http://127.0.0.1:{port}/readyz",
    }


def cmd_up(args):
    state = state_dir(args)
    if (state / "cluster.json").exists():
        old = load(state)
        if any(alive(p.get("pid")) for p in all_procs(old)):
            raise ClusterError(f"a cluster already runs from {state}: `make cluster-down` first")
        shutil.rmtree(state)
    bins = bin_dir()
    for name in ("switchboard-gateway", "switchboard-presence"):
        if not (bins / name).exists():
            raise ClusterError(f"{bins / name} not found: build it (make cluster builds it)")
    for tool, package in (("nats-server", "nats-server"), ("haproxy", "haproxy")):
        if not shutil.which(tool):
            raise ClusterError(f"{tool} not found: install it (Debian: apt-get install {package})")
    (state / "logs").mkdir(parents=True)
    want_port = int(os.environ.get("CLUSTER_PORT") or 0)
    ports = free_ports(NATS * 3 + PRESENCE * 2 + GATEWAYS + 1, taken=[want_port])
    lb_port = want_port or ports.pop()
    nats_ports = [(ports.pop(), ports.pop(), ports.pop()) for _ in range(NATS)]
    routes = ",".join(f"nats://127.0.0.1:{r}" for _, r, _ in nats_ports)
    nats_urls = [f"nats://127.0.0.1:{c}" for c, _, _ in nats_ports]
    gateway_env = {
        k: v for k, v in os.environ.items()
        if k.startswith(PASSTHROUGH_PREFIX) and k not in NOT_PASSED
    }
    gateway_env.setdefault("SWITCHBOARD_API_KEY", DEV_API_KEY)
    gateway_env.setdefault("SWITCHBOARD_TOKEN_HMAC_SECRET", DEV_TOKEN_SECRET)
    cluster = {"dir": str(state), "port": lb_port, "api_key": gateway_env["SWITCHBOARD_API_KEY"],
               "nats": [], "presence": [], "gateways": [], "haproxy": None}
    save(state, cluster)
    try:
        for i, (client, route, monitor) in enumerate(nats_ports):
            store = state / f"nats-{i}"
            store.mkdir()
            proc = {
                "name": f"nats-{i}",
                "port": client,
                "argv": ["nats-server", "-c", str(CONFIG / "nats.conf"), "-a", "127.0.0.1",
                         "-p", str(client), "-m", str(monitor),
                         "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes,
                         "-P", str(store / "nats.pid")],
                "env": {"POD_NAME": f"nats-{i}", "NATS_STORE_DIR": str(store)},
                "log": str(state / "logs" / f"nats-{i}.log"),
                "ready": f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true",
            }
            spawn(proc, state)
            cluster["nats"].append(proc)
            save(state, cluster)
        for p in cluster["nats"]:
            wait_ready(p["name"], p["ready"], p["pid"], p["log"])
        presence_urls = []
        for i in range(PRESENCE):
            grpc, http = ports.pop(), ports.pop()
            proc = {
                "name": f"presence-{i + 1}",
                "port": grpc,
                "argv": [str(bins / "switchboard-presence"),
                         "--config", str(CONFIG / "presence.toml"),
                         "--listen", f"127.0.0.1:{grpc}", "--http-listen", f"127.0.0.1:{http}",
                         "--nats-url", ",".join(nats_urls)],
                "env": {},
                "log": str(state / "logs" / f"presence-{i + 1}.log"),
                "ready": f"http://127.0.0.1:{http}/readyz",
            }
            spawn(proc, state)
            cluster["presence"].append(proc)
            save(state, cluster)
            presence_urls.append(f"http://127.0.0.1:{grpc}")
        for p in cluster["presence"]:
            wait_ready(p["name"], p["ready"], p["pid"], p["log"])
        for i in range(GATEWAYS):
            proc = gateway_proc(state, bins, i, ports.pop(), nats_urls, presence_urls, gateway_env)
            spawn(proc, state)
            cluster["gateways"].append(proc)
            save(state, cluster)
        for p in cluster["gateways"]:
            wait_ready(p["name"], p["ready"], p["pid"], p["log"])
        cfg = state / "haproxy.cfg"
        cfg.write_text(haproxy_config(lb_port, cluster["gateways"]))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ClusterError(f"haproxy refuses {cfg}:\n{check.stdout}{check.stderr}")
        proc = {
            "name": "haproxy",
            "port": lb_port,
            "argv": ["haproxy", "-db", "-f", str(cfg)],
            "env": {},
            "log": str(state / "logs" / "haproxy.log"),
            "ready": f"http://127.0.0.1:{lb_port}/readyz",
        }
        spawn(proc, state)
        cluster["haproxy"] = proc
        save(state, cluster)
        wait_ready("haproxy", proc["ready"], proc["pid"], proc["log"])
    except BaseException:
        print(f"cluster.py: start failed; stopping what started (logs kept in {state}/logs)",
              file=sys.stderr)
        stop_all(cluster)
        raise
    print_summary(cluster)


def print_summary(c):
    port = c["port"]
    print(f"""Switchboard cluster up (state and logs in {c['dir']}):
  WebSocket  ws://127.0.0.1:{port}/connection/websocket   (HAProxy, leastconn over {len(c['gateways'])} gateways)
  API        curl -H 'X-API-Key: {c['api_key']}' -d '{{"channel":"chat:lobby","data":{{}}}}' http://127.0.0.1:{port}/api/publish
  gateways   {' '.join(f"127.0.0.1:{g['port']}" for g in c['gateways'])}
  presence   {' '.join(f"127.0.0.1:{p['port']}" for p in c['presence'])} (gRPC)
  NATS       {' '.join(f"nats://127.0.0.1:{n['port']}" for n in c['nats'])}
Stop it with `make cluster-down`.""")


def all_procs(c):
    return [p for p in [c.get("haproxy"), *c.get("gateways", []), *c.get("presence", []),
                        *c.get("nats", [])] if p]


def stop_all(c):
    # Front to back: the balancer, the gateways (they drain), presence, then NATS.
    for group in ([c.get("haproxy")], c.get("gateways", []), c.get("presence", []), c.get("nats", [])):
        for p in group:
            if p and alive(p.get("pid")):
                os.kill(p["pid"], signal.SIGTERM)
        for p in group:
            if p:
                stop(p, timeout=40.0)


def cmd_down(args):
    state = state_dir(args)
    if not (state / "cluster.json").exists():
        print(f"no cluster in {state}")
        return
    cluster = load(state)
    stop_all(cluster)
    if args.keep_logs:
        for n in cluster["nats"]:
            shutil.rmtree(Path(n["env"]["NATS_STORE_DIR"]), ignore_errors=True)
        (state / "cluster.json").unlink()
        print(f"cluster in {state} stopped; logs kept in {state / 'logs'}")
        return
    shutil.rmtree(state)
    print(f"cluster in {state} stopped")


def cmd_status(args):
    c = load(state_dir(args))
    for p in all_procs(c):
        up = "running" if alive(p.get("pid")) else "STOPPED"
        ready = http_status(p["ready"]) if up == "running" else None
        print(f"{p['name']:<12} pid {p.get('pid')!s:<8} {up:<8} port {p['port']:<6} ready={ready}")


def cmd_restart_gateway(args):
    state = state_dir(args)
    c = load(state)
    gateways = c["gateways"]
    n = args.gateway if args.gateway else (args.run % len(gateways)) + 1
    if not 1 <= n <= len(gateways):
        raise ClusterError(f"gateway {n}: there are {len(gateways)}")
    g = gateways[n - 1]
    started = time.monotonic()
    # SIGTERM: the gateway drains over drain_window (plus a 5 s grace) before exiting.
    stop(g, signal.SIGKILL if args.kill else signal.SIGTERM, timeout=60.0)
    stopped = time.monotonic()
    wait_port_free(g["port"])
    spawn(g, state)
    save(state, c)
    wait_ready(g["name"], g["ready"], g["pid"], g["log"])
    print(f"{g['name']} restarted ({'kill -9' if args.kill else 'SIGTERM'}): "
          f"stopped in {stopped - started:.1f} s, ready {time.monotonic() - stopped:.1f} s later",
          file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="state directory (default $CLUSTER_DIR or .cluster)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    d = sub.add_parser("down")
    d.add_argument("--keep-logs", action="store_true", help="keep the logs (and the state directory)")
    sub.add_parser("status")
    r = sub.add_parser("restart-gateway")
    r.add_argument("gateway", type=int, nargs="?", help="1-based gateway number")
    r.add_argument("--run", type=int, default=0, help="restart gateway (RUN mod 3) + 1")
    r.add_argument("--kill", action="store_true", help="kill -9 instead of SIGTERM")
    args = parser.parse_args()
    try:
        {"up": cmd_up, "down": cmd_down, "status": cmd_status,
         "restart-gateway": cmd_restart_gateway}[args.command](args)
    except ClusterError as e:
        print(f"cluster.py: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
