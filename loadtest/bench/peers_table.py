"""The comparison table of `make bench-peers` (loadtest/bench/peers.sh).

Reads `SHAPE<TAB>TITLE` lines on stdin and, from the directory in argv[1], the
switchboard-loadtest --json summaries SERVER-SHAPE-RUN.json (SERVER: sockudo,
switchboard; RUN: 1..argv[2]); writes a markdown table, one row per figure, each
run's value for both servers and the ratio of the means (Switchboard / sockudo),
then the issue's targets, each met or missed. A run without a summary shows as
"failed" and leaves its figure's ratio out.
"""

import json
import os
import statistics
import sys

SERVERS = ("sockudo", "switchboard")


def load(out, server, shape, runs):
    found = []
    for i in range(1, runs + 1):
        path = os.path.join(out, f"{server}-{shape}-{i}.json")
        try:
            with open(path) as f:
                found.append(json.load(f))
        except (OSError, ValueError):
            found.append(None)
    return found


def get(summary, *keys):
    value = summary
    for key in keys:
        if value is None:
            return None
        value = value.get(key)
    return value


CONNECT_FIGURES = [
    ("RSS per connection", ("server", "rss_per_connection_bytes"), "{:,.0f} B"),
    ("connect rate", ("connections", "connect_rate_per_s"), "{:,.0f}/s"),
    ("connect p99", ("connections", "connect_latency", "p99_ms"), "{:,.1f} ms"),
    ("connected", ("connections", "connected"), "{:,.0f}"),
]
FANOUT_FIGURES = [
    ("publications per second reached", ("delivery", "publish_rate_per_s"), "{:,.1f}"),
    ("deliveries per server CPU-second", ("server", "deliveries_per_cpu_s"), "{:,.0f}"),
    ("delivery p50", ("delivery", "latency", "p50_ms"), "{:,.1f} ms"),
    ("delivery p99", ("delivery", "latency", "p99_ms"), "{:,.1f} ms"),
    ("publish answer p50", ("delivery", "publish_ack_latency", "p50_ms"), "{:,.1f} ms"),
    ("RSS per connection", ("server", "rss_per_connection_bytes"), "{:,.0f} B"),
]
LOSS = (("lost",), ("duplicates",), ("out_of_order",))


def cells(summaries, keys, fmt):
    values = [None if s is None else get(s, *keys) for s in summaries]
    text = " / ".join("failed" if v is None else fmt.format(v) for v in values)
    present = [v for v in values if v is not None]
    return text, (statistics.mean(present) if present and len(present) == len(values) else None)


def main():
    out, runs = sys.argv[1], int(sys.argv[2])
    shapes = [line.rstrip("\n").split("\t", 1) for line in sys.stdin if line.strip()]
    print(f"| row ({runs} runs each) | sockudo | Switchboard | Switchboard ÷ sockudo |")
    print("|---|---|---|---|")
    means = {}
    lost_total = {server: 0 for server in SERVERS}
    missing = 0
    for shape, title in shapes:
        data = {server: load(out, server, shape, runs) for server in SERVERS}
        figures = CONNECT_FIGURES if shape.startswith("connect") else FANOUT_FIGURES
        for name, keys, fmt in figures:
            row = [f"{title}: {name}"]
            mean = {}
            for server in SERVERS:
                text, mean[server] = cells(data[server], keys, fmt)
                row.append(text)
            ratio = None
            if mean["sockudo"] and mean["switchboard"] is not None:
                ratio = mean["switchboard"] / mean["sockudo"]
            row.append("" if ratio is None else f"{ratio:.3g}×")
            means[(shape, keys)] = (mean, ratio)
            print("| " + " | ".join(row) + " |")
        if not shape.startswith("connect"):
            row = [f"{title}: lost / duplicated / out of order"]
            for server in SERVERS:
                parts = []
                for s in data[server]:
                    if s is None:
                        parts.append("failed")
                        missing += 1
                        continue
                    counts = [get(s, "delivery", "counts", *k) or 0 for k in LOSS]
                    lost_total[server] += sum(counts)
                    parts.append("/".join(str(c) for c in counts))
                row.append(" ; ".join(parts))
            row.append("")
            print("| " + " | ".join(row) + " |")
    print()
    print("Targets (issue 14):")
    print()
    cpu = ("server", "deliveries_per_cpu_s")
    p99 = ("delivery", "latency", "p99_ms")
    rate = ("delivery", "publish_rate_per_s")
    for shape, title in shapes:
        if shape.startswith("connect"):
            continue
        _, r = means.get((shape, cpu), (None, None))
        if r is not None:
            verdict = "met" if r >= 2 else "missed"
            print(f"- {title}: deliveries per CPU-second ≥ 2× sockudo's: {r:.2f}×, {verdict}")
        if shape.startswith("same"):
            (rm, _), (_, rp) = means.get((shape, rate)), means.get((shape, p99))
            if rp is None or not rm["sockudo"] or rm["switchboard"] is None:
                continue
            same = abs(rm["switchboard"] - rm["sockudo"]) <= 0.05 * rm["sockudo"]
            at = "the same load" if same else (
                f"NOT the same load ({rm['sockudo']:.1f} and {rm['switchboard']:.1f} msg/s)")
            verdict = "met" if rp <= 0.5 and same else "missed"
            print(f"- {title}: p99 ≤ ½ sockudo's at {at}: {rp:.2f}×, {verdict}")
    for server in SERVERS:
        label = "Switchboard" if server == "switchboard" else server
        verdict = "yes" if lost_total[server] == 0 else f"no ({lost_total[server]})"
        print(f"- {label}: 0 lost, duplicated or out of order in every fan-out run: {verdict}")
    if missing:
        print(f"- {missing} fan-out runs failed (no summary): see the run output")


if __name__ == "__main__":
    main()
