#!/usr/bin/env python3
"""Asks a real Prometheus, which scrapes one conductor-metrics instance twice
(job "openmetrics" negotiates OpenMetrics, job "text" pins text 0.0.4 with
?format=text), whether both jobs stored exactly the same series.

    prom_compare_formats.py PROM_URL [--timeout SECONDS]
"""
import argparse
import json
import sys
import time
import urllib.parse
import urllib.request

SCRAPE_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                  "scrape_samples_post_metric_relabeling", "scrape_series_added"}


def query(prom, path, params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def series(prom, job):
    found = set()
    for s in query(prom, "/api/v1/series", {"match[]": f'{{job="{job}"}}'}):
        if s["__name__"] in SCRAPE_METRICS:
            continue
        labels = tuple(sorted((k, v) for k, v in s.items() if k not in ("job", "instance")))
        found.add(labels)
    return found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("prom")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    deadline = time.monotonic() + a.timeout
    # Both jobs up, and each scraped at least twice, so series are settled.
    while True:
        up = query(a.prom, "/api/v1/query", {"query": "count_over_time(up[1m]) >= 2 and up == 1"})
        jobs = {r["metric"].get("job") for r in up["result"]}
        if {"openmetrics", "text"} <= jobs:
            break
        if time.monotonic() > deadline:
            print(f"jobs not up after {a.timeout}s: {jobs}")
            return 1
        time.sleep(0.5)
    # Only OpenMetrics carries units, so a unit proves the format was negotiated.
    for job, want in (("openmetrics", "seconds"), ("text", "")):
        meta = query(a.prom, "/api/v1/targets/metadata",
                     {"match_target": f'{{job="{job}"}}', "metric": "conductor_uptime_seconds"})
        units = {m.get("unit", "") for m in meta}
        if units != {want}:
            print(f"job {job}: unit {units}, expected {want!r}: wrong format negotiated")
            return 1
    om, text = series(a.prom, "openmetrics"), series(a.prom, "text")
    print(f"prometheus_series_openmetrics {len(om)} series")
    print(f"prometheus_series_text {len(text)} series")
    if om != text:
        for s in sorted(om - text)[:20]:
            print("only via OpenMetrics:", dict(s))
        for s in sorted(text - om)[:20]:
            print("only via text:", dict(s))
        return 1
    if len(om) < 50:
        print("suspiciously few series")
        return 1
    print("prometheus: both formats stored the same series")
    return 0


if __name__ == "__main__":
    sys.exit(main())
