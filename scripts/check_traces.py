#!/usr/bin/env python3
"""Checks the spans a strict OTLP receiver recorded for one run: the tree,
names and attributes the server promises.

    check_traces.py SPANS_FILE RUN_ID TRACE_ID PARENT_SPAN_ID [--timeout S]

Waits until the run's root span has arrived, then asserts: no request was
refused; the root `conductor.run` joined the caller's trace (TRACE_ID) with
PARENT_SPAN_ID as its parent and failed with status 2; a child
`conductor.phase.<name>` per phase points at the root; every span carries
`operation.id` and `run.id`; gate checks are span events with `gate.passed`;
token and model attributes are on the spans that used them.
"""
import argparse
import json
import sys
import time


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spans")
    p.add_argument("run_id")
    p.add_argument("trace_id")
    p.add_argument("parent")
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    deadline = time.monotonic() + a.timeout
    while True:
        records = load(a.spans)
        mine = [r for r in records if r.get("attributes", {}).get("run.id") == a.run_id]
        if any(r["name"] == "conductor.run" for r in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    errors = [r for r in records if "error" in r]
    failures = [f"receiver refused a request: {e['error']}" for e in errors]
    roots = [r for r in mine if r["name"] == "conductor.run"]
    if len(roots) != 1:
        failures.append(f"{len(roots)} root spans for run {a.run_id}")
        print("\n".join(failures))
        return 1
    root = roots[0]
    phases = [r for r in mine if r["name"].startswith("conductor.phase.")]

    def check(cond, what):
        if not cond:
            failures.append(what)

    check(root["trace_id"] == a.trace_id, f"root trace {root['trace_id']} != caller's {a.trace_id}")
    check(root["parent_span_id"] == a.parent, f"root parent {root['parent_span_id']} != {a.parent}")
    check(root["status_code"] == 2, f"failed run has status {root['status_code']}")
    check(root.get("service_name") == "conductor-e2e", f"service.name {root.get('service_name')}")
    check({p["name"] for p in phases} == {"conductor.phase.design", "conductor.phase.test"},
          f"phase spans {[p['name'] for p in phases]}")
    for s in mine:
        check(s["trace_id"] == a.trace_id, f"{s['name']} in another trace")
        check(s["attributes"].get("operation.id") == "wo-e2e", f"{s['name']} operation.id")
        check(s["attributes"].get("run.id") == a.run_id, f"{s['name']} run.id")
    for ph in phases:
        check(ph["parent_span_id"] == root["span_id"], f"{ph['name']} parent is not the root")
    design = next((p for p in phases if p["name"] == "conductor.phase.design"), None)
    if design:
        attrs = design["attributes"]
        check(str(attrs.get("gen_ai.usage.input_tokens")) == "1200", f"design input tokens {attrs}")
        check(str(attrs.get("gen_ai.usage.output_tokens")) == "300", f"design output tokens {attrs}")
        check(attrs.get("gen_ai.request.model") == "claude-x", f"design model {attrs}")
    gates = [e for s in mine for e in s.get("events", [])]
    check(any(e["attributes"].get("gate.passed") is False for e in gates), f"no failed gate event: {gates}")
    check(any(e["attributes"].get("gate.passed") is True for e in gates), f"no passed gate event: {gates}")
    if failures:
        print("\n".join(failures))
        return 1
    print(f"traces: run {a.run_id} exported as {len(mine)} spans with {len(gates)} gate events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
