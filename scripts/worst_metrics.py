"""Fills every series cap of a conductor-metrics server with the worst shapes, then weighs /metrics.

Usage: worst_metrics.py BASE_URL DECLARATIONS_FILE LIMIT_BYTES

The server must run with `--metrics-file DECLARATIONS_FILE` and the default caps, and a daily
budget that admits 40 runs and their token costs (say --daily-budget 1000000). It fills:

- the built-in families whose label values come from clients, each past its 10,000-series cap:
  40 runs of 256 phases each (the most a run's detail names), with 64-character phase, gate and
  model names, so that agent_phase_duration_seconds and its AgentGate name, agent_phases_total,
  agent_gate_results_total, agent_tokens_total, conductor_tokens_total and, as the runs end,
  agent_cost_dollars_total reach their overflow series;
- the declared families, past the declared byte ceiling: label values of 256 bytes that escape
  to twice that (quotes and backslashes), and values at their widest (24 characters). Twenty
  series of every family first, then the labelled histograms, whose label sets are written on
  the most lines (so the exposition ceiling is reached before the label one), until the ceiling
  turns new series away, then new label sets for every family until each has its overflow
  series.

It then scrapes /metrics in both formats and prints, for the larger:

    worst_metrics_bytes <n> bytes           its size
    worst_metrics_bound_bytes <n> bytes     its size had every value been at its widest (20
                                            digits for a bucket or a count, 24 characters for any
                                            other value): the same series can weigh no more
    worst_metrics_declared_bytes <n> bytes  the declared families' lines in it

and exits 1 if either of the first two is above LIMIT_BYTES. Only loopback is addressed; every
request has a deadline.
"""

import http.client
import json
import sys
import time
import urllib.parse

BASE, DECLARATIONS, LIMIT = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOST = urllib.parse.urlparse(BASE).netloc
RUNS, PHASES_PER_RUN = 40, 256
# The labelled built-in families with label values from clients (an AgentGate name shares the
# series, and the overflow count, of the family it names).
BUILTIN_FAMILIES = 6
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# The widest values each format writes: 24 characters.
WIDE = -1.2345678901234567e-300
WIDE_UP = 1.2345678901234567e300


def fail(message):
    print("worst_metrics: " + message, file=sys.stderr)
    sys.exit(1)


class Client:
    def __init__(self):
        self.conn = http.client.HTTPConnection(HOST, timeout=60)

    def call(self, method, path, body=None, headers=None, want=200):
        data = None if body is None else json.dumps(body)
        h = {"Content-Type": "application/json"} if data else {}
        h.update(headers or {})
        self.conn.request(method, path, data, h)
        r = self.conn.getresponse()
        text = r.read()
        if r.status != want:
            fail(f"{method} {path}: {r.status} {text[:300]!r}, wanted {want}")
        return text


def name(kind, i):
    return f"{kind}-{i:06d}-".ljust(64, "x")


def fill_builtin(c):
    for run in range(RUNS):
        rid = f"worst-metrics-{run}"
        c.call("POST", "/api/v1/runs", {"run_id": rid, "agent": "worst-metrics"}, want=201)
        events = []
        for i in range(run * PHASES_PER_RUN, (run + 1) * PHASES_PER_RUN):
            phase = name("phase", i)
            events += [
                {"type": "phase_completed", "phase": phase, "success": i % 2 == 0,
                 "duration_ms": 1234567.891 + i},
                {"type": "gate_checked", "gate": name("gate", i), "passed": i % 2 == 0},
                {"type": "tokens", "phase": phase, "model": name("model", i),
                 "input_tokens": 12345 + i, "output_tokens": 6789 + i},
            ]
        c.call("POST", f"/api/v1/runs/{rid}/events", events)
        c.call("POST", f"/api/v1/runs/{rid}/complete", {})
    full = sorted(overflowed(c))
    print(f"worst_metrics: built-in families at their cap: {', '.join(full)}", file=sys.stderr)
    if len(full) < BUILTIN_FAMILIES:
        fail(f"only {len(full)} built-in families reached their cap, not {BUILTIN_FAMILIES}")


def label_value(i, seed):
    # 256 bytes, most of which the exposition escapes to two.
    head = f"{seed}-{i}-"
    return head + '"\\' * ((256 - len(head)) // 2) + "x" * ((256 - len(head)) % 2)


def update(d, i, seed):
    labels = {l: label_value(i, f"{seed}{j}") for j, l in enumerate(d.get("labels", []))}
    op = {"counter": ("add", WIDE_UP), "gauge": ("set", WIDE), "histogram": ("observe", WIDE)}
    key, value = op[d["type"]]
    return {"name": d["name"], "labels": labels, key: value}


def overflowed(c):
    """The families with lookups sent to their overflow series, from one scrape."""
    text = c.call("GET", "/metrics").decode()
    head = 'conductor_series_overflow_total{metric="'
    return {l[len(head):].split('"')[0] for l in text.splitlines()
            if l.startswith(head) and float(l.rsplit(" ", 1)[1]) > 0}


def fill_declared(c, declared):
    labelled = [d for d in declared if d.get("labels")]
    c.call("POST", "/api/v1/metrics", [update(d, 0, "u") for d in declared if not d.get("labels")])
    c.call("POST", "/api/v1/metrics", [update(d, i, "a") for d in labelled for i in range(20)])
    wide = [d for d in labelled if d["type"] == "histogram"] or labelled
    i = 20
    for _ in range(100):
        if wide[0]["name"] in overflowed(c):
            break
        # About 1 KB each: a batch stays under the 1 MiB body limit.
        ups = []
        while len(ups) < 750:
            ups += [update(d, i, "b") for d in wide]
            i += 1
        c.call("POST", "/api/v1/metrics", ups)
    else:
        fail("the declared families never reached their byte ceiling")
    # What the histograms left, smaller series may still take: new label sets for every family
    # until each has its overflow series.
    for batch in range(100):
        done = overflowed(c)
        left = [d for d in labelled if d["name"] not in done]
        if not left:
            return
        ups = [update(d, 10**6 + 100 * batch + i, "c") for d in left for i in range(30)]
        c.call("POST", "/api/v1/metrics", ups)
    fail("some declared families never sent a label set to their overflow series")


def bound(text):
    """What `text` could weigh with every value at its widest: 20 digits for a bucket or a count
    (a u64), 24 characters for any other value (a float)."""
    total = 0
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            total += len(line) + 1
            continue
        series, value = line.rsplit(" ", 1)
        count = series.split("{")[0].endswith(("_bucket", "_count"))
        total += len(series) + 1 + max(len(value), 20 if count else 24) + 1
    return total


def weigh(c, declared):
    """The larger scrape of the two formats, its bound, and the declared families' lines in it."""
    names = tuple(d["name"] for d in declared)
    heads = tuple(f"# {kind} {n}" for n in names for kind in ("HELP", "TYPE", "UNIT"))
    worst = (0, 0, 0)
    for accept in (None, OPENMETRICS):
        text = c.call("GET", "/metrics", headers={"Accept": accept} if accept else {}).decode()
        ours = sum(len(l) + 1 for l in text.split("\n") if l.startswith(names) or l.startswith(heads))
        worst = max(worst, (len(text.encode()), bound(text), ours))
    return worst


def main():
    with open(DECLARATIONS, encoding="utf-8") as f:
        declared = json.load(f)
    c = Client()
    started = time.monotonic()
    fill_builtin(c)
    filled = time.monotonic()
    fill_declared(c, declared)
    worst, most, ours = weigh(c, declared)
    print(f"worst_metrics: built-in families filled in {filled - started:.1f} s, declared ones "
          f"and the scrapes in {time.monotonic() - filled:.1f} s", file=sys.stderr)
    print(f"worst_metrics_bytes {worst} bytes")
    print(f"worst_metrics_bound_bytes {most} bytes")
    print(f"worst_metrics_declared_bytes {ours} bytes")
    if max(worst, most) > LIMIT:
        fail(f"/metrics weighs {worst} bytes at its worst, and could weigh {most}: over {LIMIT}")


main()
