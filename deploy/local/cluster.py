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

Faults (deploy/local/faults.sh drives them under load; numbers are 1-based):

    cluster.py kill-nats N|--leader-of STREAM
                                  kill -9 NATS node N, or the one leading STREAM
    cluster.py restart-nats [N]   start it (default: every stopped node) again (same flags and store), wait until
                                  its JetStream is up (/healthz?js-enabled-only=true)
    cluster.py kill-presence N    kill -9 presence replica N; with --mid-sweep (N
                                  optional), poll every replica's
                                  switchboard_presence_expired_total every 20 ms and
                                  kill the one whose counter rises (it holds the sweep
                                  lease and is expiring members); exit 1 if no sweep
                                  starts within --timeout (60 s)
    cluster.py restart-presence [N]
                                  start replica N (default: every stopped one), wait
                                  until ready
    cluster.py freeze-gateway N --seconds S
                                  SIGSTOP gateway N, SIGCONT S seconds later, wait
                                  until it is ready again
    cluster.py check-presence --channel-prefix P --channels K --expect-clients C
               [--observer-view F]
                                  poll presence_stats of P0..P{K-1} through HAProxy
                                  until each counts exactly C clients on two polls a
                                  second apart (and, with --observer-view, until the
                                  members presence lists are the clients the
                                  presence observer's joins and leaves leave in, F
                                  being its --view-file); exit 1 after --timeout
                                  (60 s), with the last counts

Fault commands print what they did on stderr and append it to events.jsonl in the
state directory.

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
    """A clean environment: PATH, HOME, locale; no stray SWITCHBOARD_* options but the
    log filter (SWITCHBOARD_LOG, for every process of the cluster)."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SWITCHBOARD_LOG")}


def stop(proc, sig=signal.SIGTERM, timeout=30.0):
    """Signals a process and waits (bounded) for it to exit; SIGKILL after timeout."""
    pid = proc.get("pid")
    if not alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if sig != signal.SIGKILL:
        # A frozen (SIGSTOP) process acts on the signal only once continued.
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
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
                # Every port it binds: a restart waits until they are free.
                "ports": [client, route, monitor],
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
                "ports": [grpc, http],
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
                try:
                    os.kill(p["pid"], signal.SIGTERM)
                    os.kill(p["pid"], signal.SIGCONT)
                except ProcessLookupError:
                    pass
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
    # Its clients (each of the load tool's holds one presence member): a kill -9 leaves
    # that many members for the presence sweep.
    connections = metric(metrics_url(g), "switchboard_connections")
    started = time.monotonic()
    # SIGTERM: the gateway drains over drain_window (plus a 5 s grace) before exiting.
    stop(g, signal.SIGKILL if args.kill else signal.SIGTERM, timeout=60.0)
    stopped = time.monotonic()
    record(state, "restart-gateway", gateway=n, kill=args.kill,
           connections=None if connections is None else int(connections))
    wait_port_free(g["port"])
    spawn(g, state)
    save(state, c)
    wait_ready(g["name"], g["ready"], g["pid"], g["log"])
    held = "?" if connections is None else f"{connections:.0f}"
    print(f"{g['name']} restarted ({'kill -9' if args.kill else 'SIGTERM'}, {held} connections): "
          f"stopped in {stopped - started:.1f} s, ready {time.monotonic() - stopped:.1f} s later",
          file=sys.stderr)


def record(state, event, **fields):
    """Appends what a fault command did to events.jsonl (faults.sh reads it)."""
    with open(state / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")


def pick(c, group, n):
    procs = c[group]
    if not 1 <= n <= len(procs):
        raise ClusterError(f"{group} {n}: there are {len(procs)} (1-based)")
    return procs[n - 1]


def metrics_url(proc):
    """/metrics of a gateway or presence replica: the port of its ready URL."""
    return proc["ready"].rsplit("/", 1)[0] + "/metrics"


def metric(url, name, timeout=1.0):
    """The sum of metric `name`'s samples (0 when not recorded yet); None when /metrics
    does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def kill9(proc, what):
    try:
        os.kill(proc["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while alive(proc["pid"]):
        if time.monotonic() >= deadline:
            raise ClusterError(f"{what} (pid {proc['pid']}) still alive 10 s after kill -9")
        time.sleep(0.02)


def start_again(state, c, proc):
    """Starts a stopped process with its recorded argv once its ports are free."""
    if alive(proc.get("pid")):
        raise ClusterError(f"{proc['name']} (pid {proc['pid']}) is running")
    started = time.monotonic()
    for port in proc.get("ports", [proc["port"]]):
        wait_port_free(port)
    spawn(proc, state)
    save(state, c)
    wait_ready(proc["name"], proc["ready"], proc["pid"], proc["log"])
    return time.monotonic() - started


def stream_leader(c, stream):
    """The server name (nats-0, …) of the leader of JetStream stream `stream`, as the
    first NATS node that answers its monitoring /jsz says; None when none knows."""
    for n in c["nats"]:
        if not alive(n.get("pid")):
            continue
        url = n["ready"].split("/healthz", 1)[0] + "/jsz?streams=true&accounts=true"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                info = json.load(r)
        except (OSError, ValueError):
            continue
        for account in info.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                leader = (detail.get("cluster") or {}).get("leader")
                if detail.get("name") == stream and leader:
                    return leader
    return None


def cmd_kill_nats(args):
    state = state_dir(args)
    c = load(state)
    if args.leader_of:
        leader = stream_leader(c, args.leader_of)
        numbers = [i + 1 for i, n in enumerate(c["nats"]) if n["name"] == leader]
        if not numbers:
            raise ClusterError(f"no NATS node names itself leader of stream {args.leader_of}")
        node = numbers[0]
    elif args.node is not None:
        node = args.node
    else:
        raise ClusterError("kill-nats: give a node number or --leader-of STREAM")
    n = pick(c, "nats", node)
    if not alive(n.get("pid")):
        raise ClusterError(f"NATS node {node} ({n['name']}) is not running")
    kill9(n, n["name"])
    record(state, "kill-nats", node=node, pid=n["pid"], leader_of=args.leader_of)
    what = f", leader of {args.leader_of}" if args.leader_of else ""
    print(f"NATS node {node} ({n['name']}{what}, pid {n['pid']}) killed (kill -9)",
          file=sys.stderr)


def cmd_restart_nats(args):
    state = state_dir(args)
    c = load(state)
    if args.node is not None:
        targets = [(args.node, pick(c, "nats", args.node))]
    else:
        targets = [(i + 1, n) for i, n in enumerate(c["nats"]) if not alive(n.get("pid"))]
        if not targets:
            raise ClusterError("restart-nats: every node is running")
    for node, n in targets:
        took = start_again(state, c, n)
        record(state, "restart-nats", node=node, pid=n["pid"], seconds=round(took, 2))
        print(f"NATS node {node} ({n['name']}) restarted: JetStream up in {took:.1f} s",
              file=sys.stderr)


def expired(replica):
    """A replica's switchboard_presence_expired_total (None: not answering)."""
    return metric(metrics_url(replica), "switchboard_presence_expired_total", timeout=0.5)


def cmd_kill_presence(args):
    state = state_dir(args)
    c = load(state)
    if not args.mid_sweep:
        if args.replica is None:
            raise ClusterError("kill-presence: which replica? (N, or --mid-sweep)")
        p = pick(c, "presence", args.replica)
        if not alive(p.get("pid")):
            raise ClusterError(f"{p['name']} is not running")
        kill9(p, p["name"])
        record(state, "kill-presence", replica=args.replica, pid=p["pid"])
        print(f"{p['name']} (pid {p['pid']}) killed (kill -9)", file=sys.stderr)
        return
    watched = [(i + 1, p) for i, p in enumerate(c["presence"])
               if alive(p.get("pid")) and args.replica in (None, i + 1)]
    if not watched:
        raise ClusterError("kill-presence --mid-sweep: no presence replica running")
    # Expirations before now are not this sweep's: only a rise counts.
    baseline = [expired(p) for _, p in watched]
    started = time.monotonic()
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        # Each replica judged as soon as it answers: the sweep may last milliseconds.
        for i, (n, p) in enumerate(watched):
            now, base = expired(p), baseline[i]
            if base is None:
                baseline[i] = now
            if now is None or base is None or now <= base:
                continue
            kill9(p, p["name"])
            swept = int(now - base)
            record(state, "kill-presence", replica=n, pid=p["pid"], mid_sweep=True,
                   expired=swept, counter=now)
            print(f"{p['name']} (pid {p['pid']}) killed (kill -9) as it swept, "
                  f"{time.monotonic() - started:.1f} s after watching began: "
                  f"switchboard_presence_expired_total {base:.0f} -> {now:.0f} "
                  f"(it had expired {swept} in this sweep when last read)", file=sys.stderr)
            return
        time.sleep(0.02)
    counters = ", ".join(f"{p['name']} {v}" for (_, p), v in zip(watched, baseline))
    raise ClusterError(f"kill-presence --mid-sweep: no replica started expiring members within "
                       f"{args.timeout:.0f} s (switchboard_presence_expired_total: {counters})")


def cmd_restart_presence(args):
    state = state_dir(args)
    c = load(state)
    if args.replica is not None:
        targets = [(args.replica, pick(c, "presence", args.replica))]
    else:
        targets = [(i + 1, p) for i, p in enumerate(c["presence"]) if not alive(p.get("pid"))]
        if not targets:
            raise ClusterError("restart-presence: every replica is running")
    for n, p in targets:
        took = start_again(state, c, p)
        record(state, "restart-presence", replica=n, pid=p["pid"], seconds=round(took, 2))
        print(f"{p['name']} restarted: ready in {took:.1f} s", file=sys.stderr)


def cmd_freeze_gateway(args):
    state = state_dir(args)
    c = load(state)
    g = pick(c, "gateways", args.gateway)
    if not alive(g.get("pid")):
        raise ClusterError(f"{g['name']} is not running")
    # A SIGTERM (the load tool giving up on the hook, a Ctrl-C) must not leave it frozen.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    os.kill(g["pid"], signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        # The fault itself: the gateway stays stopped this long.
        time.sleep(args.seconds)
    finally:
        os.kill(g["pid"], signal.SIGCONT)
    thawed = time.monotonic()
    wait_ready(g["name"], g["ready"], g["pid"], g["log"])
    record(state, "freeze-gateway", gateway=args.gateway, pid=g["pid"],
           seconds=round(thawed - frozen, 2), ready_after=round(time.monotonic() - thawed, 2))
    print(f"{g['name']} frozen (SIGSTOP) for {thawed - frozen:.1f} s, ready "
          f"{time.monotonic() - thawed:.1f} s after SIGCONT", file=sys.stderr)


def presence_stats(port, key, channel, timeout=2.0):
    """num_clients of a channel through HAProxy; None when there is no answer."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/presence_stats",
        data=json.dumps({"channel": channel}).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())["result"]["num_clients"]
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
        return None


def presence_members(port, key, channel, timeout=2.0):
    """The members of a channel (client id -> user) through HAProxy; {} when no answer."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/presence",
        data=json.dumps({"channel": channel}).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return {c: m.get("user", "") for c, m in json.loads(r.read())["result"]["presence"].items()}
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError, AttributeError):
        return {}


# What a failed presence check prints, to tell where members left behind come from: a
# gateway still holding (and refreshing) them, or a sweep that does not run.
GATEWAY_GAUGES = ["switchboard_connections", "switchboard_presence_local_members",
                  "switchboard_presence_lapsed_rounds_total",
                  "switchboard_presence_client_retries_total"]
PRESENCE_GAUGES = ["switchboard_presence_members", "switchboard_presence_sweeps_total",
                   "switchboard_presence_expired_total"]


def nats_diagnostics(n):
    """One NATS node's view, for a failed check: who is connected to it, and the
    presence streams' leader, size and replicas as it sees them."""
    if not alive(n.get("pid")):
        return "not running"
    base = n["ready"].split("/healthz", 1)[0]
    try:
        with urllib.request.urlopen(base + "/connz?limit=1000", timeout=2) as r:
            names = [conn.get("name") or "?" for conn in json.load(r).get("connections") or []]
        with urllib.request.urlopen(base + "/jsz?streams=true&accounts=true", timeout=2) as r:
            info = json.load(r)
    except (OSError, ValueError) as e:
        return f"monitoring did not answer: {e}"
    clients = ", ".join(f"{names.count(name)} {name}" for name in sorted(set(names))) or "none"
    streams = []
    for account in info.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if "presence" not in detail.get("name", ""):
                continue
            cluster = detail.get("cluster") or {}
            replicas = ", ".join(f"{r.get('name')} current={r.get('current')} lag={r.get('lag', 0)}"
                                 for r in cluster.get("replicas") or [])
            state = detail.get("state") or {}
            streams.append(f"{detail['name']} leader={cluster.get('leader')} "
                           f"messages={state.get('messages')} deleted={state.get('num_deleted')} "
                           f"replicas [{replicas}]")
    return f"clients: {clients}; streams: {'; '.join(streams) or 'none'}"


def diagnose_presence(c, channels):
    print("presence diagnostics:", file=sys.stderr)
    for group, names in (("gateways", GATEWAY_GAUGES), ("presence", PRESENCE_GAUGES)):
        for p in c.get(group, []):
            values = ", ".join(f"{n.removeprefix('switchboard_')}={metric(metrics_url(p), n)}"
                               for n in names)
            print(f"  {p['name']}: {values}", file=sys.stderr)
    for ch in channels[:3]:
        members = presence_members(c["port"], c["api_key"], ch)
        shown = ", ".join(list(members)[:5])
        print(f"  {ch}: {len(members)} members, e.g. {shown}", file=sys.stderr)
    for n in c.get("nats", []):
        print(f"  {n['name']}: {nats_diagnostics(n)}", file=sys.stderr)
    for p in [*c.get("gateways", []), *c.get("presence", [])]:
        try:
            lines = Path(p["log"]).read_text(errors="replace").splitlines()
        except OSError:
            continue
        warnings = [l for l in lines if "WARN" in l or "ERROR" in l][-8:]
        for line in warnings:
            print(f"  {p['name']} log: {line[:300]}", file=sys.stderr)


def observer_disagrees(c, view_file, channels):
    """How the presence observer's view (clients whose last join/leave event is a join)
    differs from the members presence lists: None when they agree, else a summary."""
    try:
        view = json.loads(Path(view_file).read_text())
    except (OSError, ValueError):
        return "no observer view yet"
    problems = []
    for ch in channels:
        listed = set(presence_members(c["port"], c["api_key"], ch)) - {view.get("self")}
        seen = set(view.get("channels", {}).get(ch, []))
        if listed != seen:
            unannounced, gone = sorted(listed - seen), sorted(seen - listed)
            problems.append(f"{ch}: {len(unannounced)} listed whose join the observer did not see "
                            f"last (e.g. {', '.join(unannounced[:3])}), {len(gone)} the observer "
                            f"holds in that presence does not list (e.g. {', '.join(gone[:3])})")
    return "; ".join(problems) or None


def cmd_check_presence(args):
    state = state_dir(args)
    c = load(state)
    channels = [f"{args.channel_prefix}{i}" for i in range(args.channels)]
    started = time.monotonic()
    deadline = started + args.timeout
    exact, first, disagreement = 0, None, None
    while True:
        counts = [presence_stats(c["port"], c["api_key"], ch) for ch in channels]
        # What the fault left (faults.sh reads it: members a killed sweeper left over).
        first = first or counts
        exact = exact + 1 if all(n == args.expect_clients for n in counts) else 0
        # Two polls a second apart: a count passing through C on its way is not enough.
        # Then the members must be those whose joins and leaves the observer saw.
        if exact >= 2 and args.observer_view:
            disagreement = observer_disagrees(c, args.observer_view, channels)
        if exact >= 2 and not (args.observer_view and disagreement):
            record(state, "check-presence", prefix=args.channel_prefix, channels=args.channels,
                   clients=args.expect_clients, ok=True, first=first,
                   seconds=round(time.monotonic() - started, 2))
            at_first = "" if first == counts else f"; first poll: {', '.join(map(str, first))}"
            agreed = ", as the observer saw them come and go" if args.observer_view else ""
            print(f"presence exact: {args.channels} channels x {args.expect_clients} clients{agreed} "
                  f"({time.monotonic() - started:.1f} s{at_first})", file=sys.stderr)
            return
        if time.monotonic() + 1 > deadline:
            break
        time.sleep(1)
    shown = ", ".join(f"{ch}={'no answer' if n is None else n}" for ch, n in zip(channels, counts))
    diagnose_presence(c, channels)
    record(state, "check-presence", prefix=args.channel_prefix, channels=args.channels,
           clients=args.expect_clients, ok=False, first=first, counts=counts,
           observer=disagreement)
    if disagreement:
        raise ClusterError(f"presence counts exact, but not the members the observer's joins and "
                           f"leaves announced after {args.timeout:.0f} s: {disagreement}")
    raise ClusterError(f"presence not exact after {args.timeout:.0f} s: expected "
                       f"{args.expect_clients} clients per channel, last counts: {shown}")


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
    n = sub.add_parser("kill-nats")
    n.add_argument("node", type=int, nargs="?", help="1-based NATS node number")
    n.add_argument("--leader-of", metavar="STREAM",
                   help="kill the node that leads JetStream stream STREAM (e.g. sb-n_chat)")
    n = sub.add_parser("restart-nats")
    n.add_argument("node", type=int, nargs="?", help="1-based (default: every stopped one)")
    k = sub.add_parser("kill-presence")
    k.add_argument("replica", type=int, nargs="?", help="1-based replica number")
    k.add_argument("--mid-sweep", action="store_true",
                   help="kill the replica (of all, or N) that starts expiring members")
    k.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for a sweep (--mid-sweep)")
    p = sub.add_parser("restart-presence")
    p.add_argument("replica", type=int, nargs="?", help="1-based (default: every stopped one)")
    f = sub.add_parser("freeze-gateway")
    f.add_argument("gateway", type=int, help="1-based gateway number")
    f.add_argument("--seconds", type=float, required=True, help="how long it stays stopped")
    cp = sub.add_parser("check-presence")
    cp.add_argument("--channel-prefix", required=True)
    cp.add_argument("--channels", type=int, required=True)
    cp.add_argument("--expect-clients", type=int, required=True)
    cp.add_argument("--timeout", type=float, default=60.0)
    cp.add_argument("--observer-view", help="presence-observer.js --view-file to agree with")
    args = parser.parse_args()
    try:
        {"up": cmd_up, "down": cmd_down, "status": cmd_status,
         "restart-gateway": cmd_restart_gateway, "kill-nats": cmd_kill_nats,
         "restart-nats": cmd_restart_nats, "kill-presence": cmd_kill_presence,
         "restart-presence": cmd_restart_presence, "freeze-gateway": cmd_freeze_gateway,
         "check-presence": cmd_check_presence}[args.command](args)
    except ClusterError as e:
        print(f"cluster.py: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
