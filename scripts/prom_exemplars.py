#!/usr/bin/env python3
"""Asks a real Prometheus (run with --enable-feature=exemplar-storage) for the exemplars of a
query until one names a run that was sent, and checks that every exemplar it returns does.

    prom_exemplars.py PROM_URL --query QUERY --run RUN_ID=TRACE_ID [--run ...] [--timeout SECONDS]

Each --run is a run sent with a traceparent and that trace id. An exemplar with a trace_id must
carry the run_id of the run sent with it; one without a trace_id must name a sent run that had
no trace (given as RUN_ID=). Prints `prometheus_exemplar QUERY SERIES trace_id=... run_id=...`
per exemplar found. Exit status: 0 when a sent run's trace id came back and no exemplar was
foreign, 1 when not within the timeout, 2 when Prometheus cannot be asked.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

QUERY_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.5


def exemplars(prom, query):
    """Every (series labels, exemplar) Prometheus holds for the query, over all time."""
    params = urllib.parse.urlencode({"query": query})
    url = f"{prom}/api/v1/query_exemplars?{params}"
    with urllib.request.urlopen(url, timeout=QUERY_TIMEOUT_SECONDS) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return [(s["seriesLabels"], e) for s in body["data"] or [] for e in s["exemplars"]]


def describe(series, exemplar):
    name = series.get("__name__", "")
    le = series.get("le")
    where = f"{name}{{le={le}}}" if le is not None else name
    labels = " ".join(f"{k}={v}" for k, v in sorted(exemplar["labels"].items()))
    return f"{where} {labels} value={exemplar['value']} at={exemplar['timestamp']}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prom")
    p.add_argument("--query", required=True)
    p.add_argument("--run", action="append", default=[], metavar="RUN_ID=TRACE_ID")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    sent = dict(r.partition("=")[::2] for r in a.run)
    traces = {t for t in sent.values() if t}
    deadline = time.monotonic() + a.timeout
    found = []
    while True:
        try:
            found = exemplars(a.prom, a.query)
        except (OSError, urllib.error.URLError, RuntimeError, ValueError) as e:
            print(f"cannot ask {a.prom}: {e}", file=sys.stderr)
            return 2
        if any(e["labels"].get("trace_id") in traces for _, e in found):
            break
        if time.monotonic() > deadline:
            print(f"{a.query}: no exemplar with a sent trace id after {a.timeout}s", file=sys.stderr)
            for series, e in found:
                print(f"  seen: {describe(series, e)}", file=sys.stderr)
            return 1
        time.sleep(POLL_SECONDS)
    foreign = 0
    for series, e in found:
        labels = e["labels"]
        run = labels.get("run_id")
        ok = run in sent and sent[run] == labels.get("trace_id", "")
        foreign += not ok
        print(f"prometheus_exemplar {a.query} {describe(series, e)}{'' if ok else ' FOREIGN'}")
    if foreign:
        print(f"{a.query}: {foreign} exemplars name no run sent as such", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
