#!/usr/bin/env python3
"""Checks that the built manifests fit together and fit the binaries.

    check_manifests.py --bin-dir DIR BUILT.yaml...

BUILT.yaml are `kustomize build` outputs of the overlays (validate.sh writes them).
Schema validation of the core objects is kubernetes-validate's job; this checks what
a schema cannot see:

- the binaries: every SWITCHBOARD_* variable and --flag a container passes exists in
  the binary's --help; every key of the mounted TOML files is an option the binary
  knows; container ports are the ports the config files listen on; the prometheus.io
  annotations name the port that serves /metrics; terminationGracePeriodSeconds
  covers preStop + shutdown_delay + drain_window + the binary's grace; the Dockerfile copies the
  binaries the manifests run, exposes their ports and runs as the pods' user;
- live: a real nats-server accepts nats.conf (`-t`), and switchboard-presence and
  switchboard-gateway start with the manifests' configuration and environment
  (addresses pointed at a local nats-server) and answer 200 on every probe and
  scrape path the manifests use;
- references: Services, NetworkPolicies, PDBs, HPAs, the Ingress and the
  ServiceMonitors select or name things that exist, with named ports that exist;
  NATS routes and client URLs name the StatefulSet's pods;
- the CRD objects kubernetes-validate has no schema for (ServiceMonitor,
  PrometheusRule) get a structural check, and every switchboard_* metric in an
  alert or in the Grafana dashboard must be one the code records.

Exits 1 with one line per problem. Needs PyYAML (from the validation venv).
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "k8s" / "base" / "config"
BINARIES = ("switchboard-gateway", "switchboard-presence")
# Config key -> named container port that must carry it.
PORT_KEYS = {
    "switchboard-gateway": {"listen": "http"},
    "switchboard-presence": {"listen": "grpc", "http_listen": "http"},
}
ENV_PORTS = {"switchboard-gateway": {"SWITCHBOARD_GRPC_API_LISTEN": "grpc-api"}}
# Named port that serves HTTP probes and /metrics.
HTTP_PORT = {"switchboard-gateway": "http", "switchboard-presence": "http"}
# Keys of the gateway's file that are not flags.
FILE_ONLY_KEYS = {"switchboard-gateway": {"channel", "namespaces"}, "switchboard-presence": set()}
# Variables that point at other services: replaced with local addresses in the live check.
ADDRESS_VARS = {"SWITCHBOARD_NATS_URL", "SWITCHBOARD_PRESENCE_URL", "SWITCHBOARD_CONFIG"}
DEADLINE = 30.0

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# --- the binaries -----------------------------------------------------------

class Binary:
    def __init__(self, path):
        self.path = path
        self.name = path.name
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True, check=True).stdout
        self.flags = set(re.findall(r"--([a-z][a-z0-9-]*)", out))
        # Secrets show as `[env: NAME]` (hide_env_values), the rest as `[env: NAME=value]`.
        self.env = set(re.findall(r"\[env: (SWITCHBOARD_[A-Z0-9_]+)[=\]]", out))
        self.options = {f.replace("-", "_") for f in self.flags} - {"help", "version", "config"}
        if not self.env or not self.flags:
            raise SystemExit(f"{path} --help lists no options or variables: cannot check against it")


def grace_seconds(source, name):
    m = re.search(r"const GRACE: Duration = Duration::from_secs\((\d+)\)", source.read_text())
    if not m:
        problem(str(source), f"no `const GRACE` found: the {name} grace period is unknown")
        return 0
    return int(m.group(1))


def known_metrics():
    names = set()
    for path in (ROOT / "crates").rglob("*.rs"):
        names |= set(re.findall(r'"(switchboard_[a-z0-9_]+)"', path.read_text()))
    return names


def metric_ok(name, known):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in known or base in known


# --- helpers over the built objects -----------------------------------------

def objects(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def workloads(docs):
    return [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]


def pod_labels(w):
    return w["spec"]["template"]["metadata"].get("labels", {})


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def named_ports(w):
    return {p["name"]: p["containerPort"] for c in w["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", []) if "name" in p}


def selected(docs, selector):
    return [w for w in workloads(docs) if selects(selector, pod_labels(w))]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def config_map(docs, name):
    for cm in objects(docs, "ConfigMap"):
        if cm["metadata"]["name"] == name:
            return cm
    return None


def mounted_file(docs, w, container, path):
    """The text of the file at `path` in the container, from a ConfigMap volume."""
    volumes = {v["name"]: v for v in w["spec"]["template"]["spec"].get("volumes", [])}
    for m in container.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            vol = volumes.get(m["name"], {})
            cm_name = vol.get("configMap", {}).get("name")
            cm = config_map(docs, cm_name) if cm_name else None
            if cm is None:
                return None
            return cm.get("data", {}).get(path[len(prefix):])
    return None


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def prestop_sleep(container):
    cmd = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" else 0


# --- static checks ------------------------------------------------------------

def check_switchboard_container(where, docs, w, c, binary, grace, dockerfile):
    spec = w["spec"]["template"]["spec"]
    env = env_of(c)
    for name in env:
        if name.startswith("SWITCHBOARD_") and name not in binary.env:
            problem(where, f"{name} is not a variable of {binary.name} (see its --help)")
    for arg in c.get("args", []):
        if arg.startswith("--") and arg[2:].split("=")[0] not in binary.flags:
            problem(where, f"{arg} is not a flag of {binary.name}")
    config_path = env.get("SWITCHBOARD_CONFIG", {}).get("value")
    config = {}
    if not config_path:
        problem(where, "no SWITCHBOARD_CONFIG: the shared config file is not used")
    else:
        text = mounted_file(docs, w, c, config_path)
        if text is None:
            problem(where, f"{config_path} is not in a mounted ConfigMap")
        else:
            config = tomllib.loads(text)
            for key in config:
                if key not in binary.options | FILE_ONLY_KEYS[binary.name]:
                    problem(where, f"{config_path}: key {key} is not an option of {binary.name}")
            local = CONFIG / Path(config_path).name
            if not local.exists() or local.read_text() != text:
                problem(where, f"{config_path} differs from {local.relative_to(ROOT)} (the local cluster's copy)")
    ports = named_ports(w)
    for key, port_name in PORT_KEYS[binary.name].items():
        if key not in config:
            problem(where, f"{config_path} sets no {key}; container port {port_name} cannot be checked")
        elif ports.get(port_name) != port_of(config[key]):
            problem(where, f"container port {port_name}={ports.get(port_name)} but {key} = {config[key]}")
    # Listeners set by the Deployment rather than the shared file (the local cluster
    # gives each gateway its own port instead).
    for var, port_name in ENV_PORTS.get(binary.name, {}).items():
        value = env.get(var, {}).get("value")
        if value is not None and ports.get(port_name) != port_of(value):
            problem(where, f"container port {port_name}={ports.get(port_name)} but {var} = {value}")
    http = HTTP_PORT[binary.name]
    for probe in ("readinessProbe", "livenessProbe"):
        get = c.get(probe, {}).get("httpGet")
        if not get:
            problem(where, f"no {probe} httpGet")
            continue
        if get["port"] != http:
            problem(where, f"{probe} uses port {get['port']}, not {http} (the port serving probes)")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        problem(where, "readinessProbe path is not /readyz")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        problem(where, "livenessProbe path is not /healthz")
    notes = w["spec"]["template"]["metadata"].get("annotations", {})
    if notes.get("prometheus.io/scrape") != "true":
        problem(where, "no prometheus.io/scrape: \"true\" annotation")
    if notes.get("prometheus.io/port") != str(ports.get(http)):
        problem(where, f"prometheus.io/port {notes.get('prometheus.io/port')} is not the {http} port {ports.get(http)}")
    if notes.get("prometheus.io/path") != "/metrics":
        problem(where, "prometheus.io/path is not /metrics")
    gateway = binary.name == "switchboard-gateway"
    drain = config.get("shutdown_delay", 0) + config.get("drain_window", 10) if gateway else 0
    needed = prestop_sleep(c) + grace + drain
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if tgps < needed:
        problem(where, f"terminationGracePeriodSeconds {tgps} < preStop + shutdown delay + drain + grace = {needed}")
    if not c.get("lifecycle", {}).get("preStop"):
        problem(where, "no preStop hook: the pod would leave the load balancer after it stopped listening")
    if c.get("resources", {}).get("requests") is None:
        problem(where, "no resource requests")
    uid = spec.get("securityContext", {}).get("runAsUser")
    if dockerfile["user"] is not None and uid != dockerfile["user"]:
        problem(where, f"runAsUser {uid} is not the image's USER {dockerfile['user']}")
    if c["command"][0] not in dockerfile["binaries"]:
        problem(where, f"{c['command'][0]} is not copied into the image by deploy/Dockerfile")
    for port in ports.values():
        if port not in dockerfile["expose"]:
            problem(where, f"container port {port} is not EXPOSEd in deploy/Dockerfile")
    check_addresses(where, docs, env)


def check_addresses(where, docs, env):
    sts = {s["metadata"]["name"]: s for s in objects(docs, "StatefulSet")}
    for url in env.get("SWITCHBOARD_NATS_URL", {}).get("value", "").split(","):
        m = re.fullmatch(r"nats://([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):(\d+)", url.strip())
        if not m:
            problem(where, f"NATS URL {url!r} is not nats://<statefulset>-<i>.<service>:<port>")
            continue
        s = sts.get(m.group(1))
        if not s or s["spec"]["serviceName"] != m.group(3) or int(m.group(2)) >= s["spec"]["replicas"]:
            problem(where, f"NATS URL {url} names no pod of a StatefulSet in the build")
        elif named_ports(s).get("client") != int(m.group(4)):
            problem(where, f"NATS URL {url}: the client port is {named_ports(s).get('client')}")
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    for url in filter(None, env.get("SWITCHBOARD_PRESENCE_URL", {}).get("value", "").split(",")):
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url.strip())
        svc = services.get(m.group(1)) if m else None
        if not svc or int(m.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
            problem(where, f"presence URL {url} names no Service port in the build")


def check_nats(where, docs, w, c):
    ports = named_ports(w)
    args = c.get("args", [])
    path = args[args.index("--config") + 1] if "--config" in args else None
    text = mounted_file(docs, w, c, path) if path else None
    if text is None:
        problem(where, "nats.conf is not mounted from a ConfigMap via --config")
        return
    want = {"client": r"^listen:\s*[\d.]+:(\d+)", "monitor": r"^http_port:\s*(\d+)",
            "cluster": r"^\s+listen:\s*[\d.]+:(\d+)"}
    for name, pattern in want.items():
        m = re.search(pattern, text, re.M)
        if not m or int(m.group(1)) != ports.get(name):
            problem(where, f"container port {name}={ports.get(name)} does not match nats.conf")
    sts = w["metadata"]["name"]
    svc = w["spec"]["serviceName"]
    routes = re.findall(r"nats://([a-z0-9.-]+):(\d+)", text)
    expected = {(f"{sts}-{i}.{svc}", str(ports.get("cluster"))) for i in range(w["spec"]["replicas"])}
    if set(routes) != expected:
        problem(where, f"nats.conf routes {sorted(routes)} are not the pods {sorted(expected)}")
    env = env_of(c)
    for var in re.findall(r"\$([A-Z_]+)", text):
        if var not in env:
            problem(where, f"nats.conf uses ${var} but the container does not set it")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    store = env.get("NATS_STORE_DIR", {}).get("value")
    claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
    data_mounts = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in claims}
    if store not in data_mounts:
        problem(where, f"the JetStream store {store} is not on a persistent volume claim")
    pid = re.search(r"^pid_file:\s*(\S+)", text, re.M)
    if not pid or str(Path(pid.group(1)).parent) not in mounts:
        problem(where, "pid_file is not on a writable volume (the root filesystem is read-only)")
    stop = " ".join(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
    if not pid or f"ldm={pid.group(1)}" not in stop:
        problem(where, "preStop does not put the node in lame-duck mode through its pid file")
    lame = sum(int(m) for m in re.findall(r"^lame_duck_(?:duration|grace_period):\s*(\d+)s", text, re.M))
    tgps = w["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if tgps < lame + 5:
        problem(where, f"terminationGracePeriodSeconds {tgps} does not cover lame-duck mode ({lame} s)")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("port") != "monitor":
            problem(where, f"{probe} does not use the monitor port")


def check_security(where, w):
    spec = w["spec"]["template"]["spec"]
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot is not true")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(where, f"container {c['name']}: root filesystem is not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(where, f"container {c['name']}: allowPrivilegeEscalation is not false")


def check_references(overlay, docs):
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for svc in objects(docs, "Service"):
        where = f"{overlay} Service/{svc['metadata']['name']}"
        targets = selected(docs, svc["spec"].get("selector"))
        if not targets:
            problem(where, "selects no workload")
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            for w in targets:
                if isinstance(tp, str) and tp not in named_ports(w):
                    problem(where, f"targetPort {tp} is not a port of {w['metadata']['name']}")
    for kind in ("PodDisruptionBudget",):
        for o in objects(docs, kind):
            if not selected(docs, o["spec"]["selector"]["matchLabels"]):
                problem(f"{overlay} {kind}/{o['metadata']['name']}", "selects no workload")
    for h in objects(docs, "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in names:
            problem(f"{overlay} HPA/{h['metadata']['name']}", f"targets missing {ref['kind']}/{ref['name']}")
    for np in objects(docs, "NetworkPolicy"):
        where = f"{overlay} NetworkPolicy/{np['metadata']['name']}"
        targets = selected(docs, np["spec"]["podSelector"]["matchLabels"])
        if not targets:
            problem(where, "applies to no workload")
        for rule in np["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                sel = peer.get("podSelector", {}).get("matchLabels")
                if sel and not selected(docs, sel):
                    problem(where, f"allows pods {sel} that no workload has")
            for p in rule.get("ports", []):
                for w in targets:
                    if isinstance(p["port"], str) and p["port"] not in named_ports(w):
                        problem(where, f"port {p['port']} is not a port of {w['metadata']['name']}")
    services = {s["metadata"]["name"]: s for s in objects(docs, "Service")}
    for ing in objects(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                svc = services.get(b["name"])
                if not svc or b["port"].get("name") not in [p.get("name") for p in svc["spec"]["ports"]]:
                    problem(f"{overlay} Ingress/{ing['metadata']['name']}", f"backend {b} does not exist")
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                secret = next((s for s in objects(docs, "Secret") if s["metadata"]["name"] == ref["name"]), None)
                if secret is not None and ref["key"] not in secret.get("data", {}):
                    problem(f"{overlay} {w['metadata']['name']}", f"Secret {ref['name']} has no key {ref['key']}")
                if secret is None and not ref["name"].startswith("switchboard-secrets"):
                    problem(f"{overlay} {w['metadata']['name']}", f"Secret {ref['name']} is neither built nor the documented switchboard-secrets")


def check_crds(overlay, docs, known):
    services = objects(docs, "Service")
    for sm in objects(docs, "ServiceMonitor"):
        where = f"{overlay} ServiceMonitor/{sm['metadata']['name']}"
        if sm.get("apiVersion") != "monitoring.coreos.com/v1":
            problem(where, f"apiVersion {sm.get('apiVersion')}")
        sel = sm.get("spec", {}).get("selector", {}).get("matchLabels")
        matched = [s for s in services if selects(sel, s["metadata"].get("labels", {}))]
        if not matched:
            problem(where, f"selects no Service (labels {sel})")
        for ep in sm["spec"].get("endpoints", []):
            if set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme"}:
                problem(where, f"unexpected endpoint fields {sorted(set(ep))}")
            for s in matched:
                if ep.get("port") not in [p.get("name") for p in s["spec"]["ports"]]:
                    problem(where, f"port {ep.get('port')} is not a port of Service {s['metadata']['name']}")
            if ep.get("path") != "/metrics":
                problem(where, "path is not /metrics")
    rules = objects(docs, "PrometheusRule")
    exprs = []
    for pr in rules:
        where = f"{overlay} PrometheusRule/{pr['metadata']['name']}"
        groups = pr.get("spec", {}).get("groups") or []
        if not groups:
            problem(where, "no groups")
        for g in groups:
            if not g.get("name") or not g.get("rules"):
                problem(where, "a group without name or rules")
            for r in g.get("rules", []):
                if set(r) - {"alert", "expr", "for", "labels", "annotations"}:
                    problem(where, f"unexpected rule fields {sorted(set(r))}")
                if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", r.get("alert", "")):
                    problem(where, f"alert name {r.get('alert')!r}")
                if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                    problem(where, f"{r.get('alert')}: no expr")
                    continue
                if "for" in r and not re.fullmatch(r"\d+[smh]", r["for"]):
                    problem(where, f"{r['alert']}: for {r['for']!r} is not a duration")
                if r.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                    problem(where, f"{r['alert']}: severity label missing or unknown")
                if not r.get("annotations", {}).get("summary"):
                    problem(where, f"{r['alert']}: no summary annotation")
                if r["expr"].count("(") != r["expr"].count(")"):
                    problem(where, f"{r['alert']}: unbalanced parentheses in expr")
                exprs.append(r["expr"])
    if rules:
        for metric in set(re.findall(r"switchboard_[a-z0-9_]+", " ".join(exprs))):
            if not metric_ok(metric, known):
                problem(f"{overlay} PrometheusRule", f"{metric} is not a metric the code records")
        joined = " ".join(exprs)
        for what, pattern in {
            "connection failures": r"switchboard_connections_refused_total",
            "delivery latency p95": r"histogram_quantile\(0\.95,.*?switchboard_delivery_latency_seconds_bucket",
            "slow-consumer disconnects": r'switchboard_disconnects_total\{code="3008"\}',
            "NATS disconnected": r"switchboard_nats_connected",
        }.items():
            if not re.search(pattern, joined, re.S):
                problem(f"{overlay} PrometheusRule", f"no alert on {what}")
    for cm in objects(docs, "ConfigMap"):
        for key, text in cm.get("data", {}).items():
            if key.endswith(".json"):
                check_dashboard(f"{overlay} ConfigMap/{cm['metadata']['name']}/{key}", text, known)


def check_dashboard(where, text, known):
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        problem(where, f"not JSON: {e}")
        return
    exprs = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
    for metric in set(re.findall(r"switchboard_[a-z0-9_]+", " ".join(exprs))):
        if not metric_ok(metric, known):
            problem(where, f"{metric} is not a metric the code records")
    for key_metric in ("switchboard_delivery_latency_seconds_bucket", "switchboard_connections_refused_total",
                       "switchboard_recovery_total", "switchboard_messages_out_total"):
        if not any(key_metric in e for e in exprs):
            problem(where, f"no panel shows {key_metric}")


def parse_dockerfile():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    runtime = text.split("\nFROM ")[-1]
    binaries = set()
    for line in runtime.splitlines():
        if line.startswith("COPY --from="):
            binaries |= {Path(p).name for p in line.split()[2:-1]}
    expose = {int(p) for line in runtime.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]}
    user = re.search(r"^USER (\d+)", runtime, re.M)
    d = {"binaries": binaries, "expose": expose, "user": int(user.group(1)) if user else None}
    if d["user"] in (None, 0):
        problem("deploy/Dockerfile", "the runtime stage does not run as a numeric non-root USER")
    if set(BINARIES) - binaries:
        problem("deploy/Dockerfile", f"the runtime stage lacks {sorted(set(BINARIES) - binaries)}")
    return d


def check_local_cluster(docs_by_overlay):
    """The local cluster runs the same config files, probes and dev secrets."""
    text = (ROOT / "deploy" / "local" / "cluster.py").read_text()
    if "option httpchk GET /readyz" not in text:
        problem("deploy/local/cluster.py", "HAProxy does not check /readyz, the gateways' readiness probe")
    dev = docs_by_overlay.get("dev", [])
    for s in objects(dev, "Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        for key, const in (("api-key", "DEV_API_KEY"), ("token-hmac-secret", "DEV_TOKEN_SECRET")):
            if f'{const} = "{data.get(key)}"' not in text:
                problem("deploy/local/cluster.py", f"{const} is not the dev overlay's {key}")


# --- live checks ------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc, pattern, log):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        m = re.search(pattern, Path(log).read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} from {proc.args[0]}:\n{Path(log).read_text(errors='replace')[-2000:]}")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return str(e)


def wait_status(url, want=200):
    deadline = time.monotonic() + DEADLINE
    status = None
    while time.monotonic() < deadline:
        status = get(url)
        if status == want:
            return status
        time.sleep(0.1)
    return status


def container(docs, binary):
    for w in workloads(docs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            if c.get("command", [None])[0] == binary:
                return w, c
    raise SystemExit(f"no container runs {binary}")


def live_env(docs, c, secrets):
    env = {}
    for name, e in env_of(c).items():
        if name in ADDRESS_VARS:
            continue
        if "value" in e:
            env[name] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[name] = secrets.get(e["valueFrom"]["secretKeyRef"]["key"], "check-secret")
    return env


def probe_paths(w, c):
    paths = {c[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe") if p in c}
    paths.add(w["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/path", "/metrics"))
    return paths


def live_checks(docs, dev_docs, bins, work):
    secrets = {}
    for s in objects(dev_docs, "Secret"):
        secrets.update({k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()})
    procs = []
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    try:
        # nats.conf parses in this nats-server.
        test = subprocess.run(["nats-server", "-c", str(CONFIG / "nats.conf"), "-t"], capture_output=True,
                              text=True, env={**base, "POD_NAME": "nats-0", "NATS_STORE_DIR": str(work / "t")})
        if test.returncode != 0:
            problem("nats.conf", f"nats-server -t refuses it: {test.stdout}{test.stderr}")
        nats_port = free_port()
        nats_log = work / "nats.log"
        procs.append(subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-js",
                                       "-sd", str(work / "nats")], stdout=open(nats_log, "w"),
                                      stderr=subprocess.STDOUT, env=base))
        wait_line(procs[-1], r"Server is ready", nats_log)
        nats_url = f"nats://127.0.0.1:{nats_port}"
        # Presence, with the manifest's environment and the shared config file.
        w, c = container(docs, "switchboard-presence")
        env = {**base, **live_env(docs, c, secrets), "SWITCHBOARD_CONFIG": str(CONFIG / "presence.toml"),
               "SWITCHBOARD_NATS_URL": nats_url}
        log = work / "presence.log"
        procs.append(subprocess.Popen(
            [str(bins / "switchboard-presence"), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--nats-replicas", "1"], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env))
        m = wait_line(procs[-1], r"listening on (\S+) http (\S+)", log)
        grpc, http = m.group(1), m.group(2)
        for path in sorted(probe_paths(w, c)):
            status = wait_status(f"http://{http}{path}")
            if status != 200:
                problem("switchboard-presence (live)", f"GET {path} answered {status}, not 200")
        # The gateway, the same way, through the presence replica.
        w, c = container(docs, "switchboard-gateway")
        env = {**base, **live_env(docs, c, secrets), "SWITCHBOARD_CONFIG": str(CONFIG / "gateway.toml"),
               "SWITCHBOARD_NATS_URL": nats_url, "SWITCHBOARD_PRESENCE_URL": f"http://{grpc}"}
        log = work / "gateway.log"
        procs.append(subprocess.Popen(
            [str(bins / "switchboard-gateway"), "--listen", "127.0.0.1:0", "--nats-replicas", "1"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env))
        m = wait_line(procs[-1], r"switchboard-gateway listening on (\S+)", log)
        for path in sorted(probe_paths(w, c)):
            status = wait_status(f"http://{m.group(1)}{path}")
            if status != 200:
                problem("switchboard-gateway (live)", f"GET {path} answered {status}, not 200")
    except RuntimeError as e:
        problem("live check", str(e))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True, type=Path)
    parser.add_argument("built", nargs="+", type=Path, help="kustomize build output, one file per overlay")
    args = parser.parse_args()
    bins = {name: Binary(args.bin_dir / name) for name in BINARIES}
    grace = {
        "switchboard-gateway": grace_seconds(ROOT / "crates/gateway/src/server.rs", "gateway"),
        "switchboard-presence": grace_seconds(ROOT / "crates/presence/src/main.rs", "presence"),
    }
    dockerfile = parse_dockerfile()
    known = known_metrics()
    docs_by_overlay = {}
    for path in args.built:
        overlay = path.stem
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        docs_by_overlay[overlay] = docs
        for w in workloads(docs):
            check_security(f"{overlay} {w['kind']}/{w['metadata']['name']}", w)
            for c in w["spec"]["template"]["spec"]["containers"]:
                where = f"{overlay} {w['kind']}/{w['metadata']['name']}"
                command = (c.get("command") or [""])[0]
                if command in bins:
                    check_switchboard_container(where, docs, w, c, bins[command], grace[command], dockerfile)
                elif c["name"] == "nats":
                    check_nats(where, docs, w, c)
                else:
                    problem(where, f"container {c['name']} runs {command!r}: no binary of this project")
        check_references(overlay, docs)
        check_crds(overlay, docs, known)
    check_local_cluster(docs_by_overlay)
    live_docs = docs_by_overlay.get("production") or next(iter(docs_by_overlay.values()))
    if shutil.which("nats-server") is None:
        problem("live check", "nats-server not found (Debian: apt-get install nats-server)")
    else:
        with tempfile.TemporaryDirectory(prefix="sb-check-") as work:
            live_checks(live_docs, docs_by_overlay.get("dev", []), args.bin_dir, Path(work))
    if problems:
        print(f"check_manifests: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check_manifests: {', '.join(p.stem for p in args.built)}: manifests, binaries, "
          "config files, probes, metrics and the Dockerfile agree")


if __name__ == "__main__":
    main()
