#!/usr/bin/env python3
"""Checks the spans a strict OTLP receiver recorded for the failed run e2e.sh sends: the tree,
times, names and attributes the server promises.

    check_traces.py SPANS_FILE RUN_ID TRACE_ID PARENT_SPAN_ID [--timeout S]
    check_traces.py SPANS_FILE --demo-runs N [--timeout S]

The first form waits until the run's root span has arrived, then asserts:

- no request was refused;
- the root `agent.research_cycle` (the research agent's name) joined the caller's trace
  (TRACE_ID) with PARENT_SPAN_ID as its parent, failed with status 2, and carries
  `operation.type` = `agent_research`, `outcome` = `failed`, `error`, `work_order.id` and an
  `exception` event with `exception.message`;
- one child `agent.phase.<short>` per phase occurrence points at the root, `<short>` being
  `design` for the reported `designing`, with `phase` as reported and `iteration`, the tokens
  and model of its own iteration only (also summed as `tokens`), and the `gate.name`,
  `gate.passed` and `gate.reason` of the last gate checked in it; the research agent's search
  finds `agent.phase.design` with `phase` = `designing`, `strategy_name` and `tokens`, and
  `agent.phase.training` with `phase` = `training` and `accuracy`;
- every phase span lies inside the root, and the root starts at the run's earliest event (its
  events carry the emitter's clock, an hour before the server's);
- every span carries `operation.id` (the run id, which is the research agent's operation id)
  and `run.id`; gate checks stay `conductor.gate` events.

The second waits for the traces of N runs `demo` sent (run ids `demo-*`) and asserts that every
phase span lies inside its run span, and that every run span has `operation.id` (its run id),
`operation.type` and `outcome`.
"""
import argparse
import json
import sys
import time

ROOT = "agent.research_cycle"
PHASE_PREFIX = "agent.phase."
WORK_ORDER_ID = "wo-e2e"
STRATEGY = "momentum-v2"
ERROR = "tests failed"
# Each phase span in start order: (span name, phase as reported, iteration, (input, output)
# tokens or None, (gate.name, gate.passed, gate.reason) or None, accuracy or None).
PHASES = [
    # The tokens were reported under `design`, the phase as `designing`: one phase.
    ("agent.phase.design", "designing", 1, (1200, 300), ("lint", False, "3 errors"), None),
    ("agent.phase.code", "code", 1, (400, 40), None, None),
    # 500 reported before this span began and 600 after it ended: all iteration 2's.
    ("agent.phase.code", "code", 2, (1100, 110), ("tests", True, "42 passed"), None),
    ("agent.phase.training", "training", 2, None, ("training", False, "accuracy below 0.45"), 0.41),
]
# The span that designs the strategy carries its name; the others do not.
STRATEGY_SPANS = {"agent.phase.design"}


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def check_demo(path, runs, timeout):
    """The second form: every phase of every demo run inside its run span."""
    deadline = time.monotonic() + timeout
    while True:
        records = load(path)
        demo = [r for r in records if str(r.get("attributes", {}).get("run.id")).startswith("demo-")]
        roots = {r["span_id"]: r for r in demo if r["name"] == ROOT}
        phases = [r for r in demo if r["name"] != ROOT]
        orphans = [p for p in phases if p["parent_span_id"] not in roots]
        if (len(roots) >= runs and not orphans) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    failures = [f"receiver refused a request: {r['error']}" for r in records if "error" in r]
    if len(roots) != runs or orphans:
        failures.append(f"{len(roots)} demo run spans, not {runs}; {len(orphans)} phases without one")
    outside = []
    for ph in phases:
        root = roots.get(ph["parent_span_id"])
        if root and not (
            root["start_time_unix_nano"] <= ph["start_time_unix_nano"]
            and ph["end_time_unix_nano"] <= root["end_time_unix_nano"]
        ):
            outside.append(f"{ph['attributes'].get('run.id')} {ph['name']}")
    if outside:
        failures.append(f"{len(outside)} of {len(phases)} phase spans outside their run: {outside[:5]}")
    names = [p["name"] for p in phases if not p["name"].startswith(PHASE_PREFIX)]
    if names:
        failures.append(f"{len(names)} demo spans neither {ROOT} nor {PHASE_PREFIX}*: {names[:5]}")
    for root in roots.values():
        attrs = root["attributes"]
        if not (attrs.get("operation.id") == attrs.get("run.id")
                and attrs.get("operation.type") == "agent_research"
                and attrs.get("outcome") in ("completed", "failed", "cancelled")):
            failures.append(f"run span attributes {attrs}")
            break
    if failures:
        print("\n".join(failures))
        return 1
    print(f"traces: {len(roots)} demo runs, all {len(phases)} phase spans inside their run span")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spans")
    p.add_argument("run_id", nargs="?")
    p.add_argument("trace_id", nargs="?")
    p.add_argument("parent", nargs="?")
    p.add_argument("--demo-runs", type=int, metavar="N")
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    if a.demo_runs is not None:
        return check_demo(a.spans, a.demo_runs, a.timeout)
    if a.parent is None:
        p.error("RUN_ID, TRACE_ID and PARENT_SPAN_ID are required without --demo-runs")
    deadline = time.monotonic() + a.timeout
    while True:
        records = load(a.spans)
        mine = [r for r in records if r.get("attributes", {}).get("run.id") == a.run_id]
        if any(r["name"] == ROOT for r in mine) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    errors = [r for r in records if "error" in r]
    failures = [f"receiver refused a request: {e['error']}" for e in errors]
    roots = [r for r in mine if r["name"] == ROOT]
    if len(roots) != 1:
        failures.append(f"{len(roots)} root spans for run {a.run_id}")
        print("\n".join(failures))
        return 1
    root = roots[0]
    phases = sorted(
        (r for r in mine if r["name"].startswith(PHASE_PREFIX)),
        key=lambda s: s["start_time_unix_nano"],
    )

    def check(cond, what):
        if not cond:
            failures.append(what)

    # The tree and the ids.
    check(root["trace_id"] == a.trace_id, f"root trace {root['trace_id']} != caller's {a.trace_id}")
    check(root["parent_span_id"] == a.parent, f"root parent {root['parent_span_id']} != {a.parent}")
    check(root.get("service_name") == "conductor-e2e", f"service.name {root.get('service_name')}")
    check(len(mine) == 1 + len(PHASES), f"{len(mine)} spans: {[s['name'] for s in mine]}")
    for s in mine:
        check(s["trace_id"] == a.trace_id, f"{s['name']} in another trace")
        check(s["attributes"].get("operation.id") == a.run_id, f"{s['name']} operation.id")
        check(s["attributes"].get("run.id") == a.run_id, f"{s['name']} run.id")

    # The run span: what it was and how it ended.
    attrs = root["attributes"]
    check(root["status_code"] == 2, f"failed run has status {root['status_code']}")
    check(root["status_message"] == ERROR, f"status message {root['status_message']!r}")
    check(attrs.get("operation.type") == "agent_research", f"operation.type {attrs}")
    check(attrs.get("outcome") == "failed", f"outcome {attrs}")
    check(attrs.get("error") == ERROR, f"error {attrs}")
    check(attrs.get("work_order.id") == WORK_ORDER_ID, f"work_order.id {attrs}")
    check("strategy_name" not in attrs and "tokens" not in attrs, f"run span attributes {attrs}")
    exceptions = [e for e in root["events"] if e["name"] == "exception"]
    check(
        [e["attributes"].get("exception.message") for e in exceptions] == [ERROR],
        f"exception events {exceptions}",
    )

    # Nesting: every phase inside the run, which starts at its earliest event.
    start, end = root["start_time_unix_nano"], root["end_time_unix_nano"]
    for ph in phases:
        check(ph["parent_span_id"] == root["span_id"], f"{ph['name']} parent is not the root")
        check(
            start <= ph["start_time_unix_nano"] <= ph["end_time_unix_nano"] <= end,
            f"{ph['name']} [{ph['start_time_unix_nano']}, {ph['end_time_unix_nano']}] "
            f"is outside the run [{start}, {end}]",
        )
    gates = [e for s in mine for e in s["events"] if e["name"] == "conductor.gate"]
    earliest = min(
        [e["time_unix_nano"] for e in gates] + [ph["start_time_unix_nano"] for ph in phases],
        default=None,
    )
    check(start == earliest, f"the run starts at {start}, not at its earliest event {earliest}")
    check(end >= time.time_ns() - 600 * 10**9, f"the run ends at {end}, before the server ended it")

    # Each phase: its names, iteration, own tokens, gate result, strategy and accuracy.
    got = [(ph["name"], ph["attributes"].get("phase")) for ph in phases]
    want = [(span, phase) for span, phase, *_ in PHASES]
    check(got == want, f"phases in start order: {got}, not {want}")
    for ph, (span, name, iteration, tokens, gate, accuracy) in zip(phases, PHASES):
        attrs = ph["attributes"]
        what = f"{span} ({name}) of iteration {iteration}"
        check(attrs.get("iteration") == iteration, f"{what}: iteration {attrs.get('iteration')}")
        usage = (attrs.get("gen_ai.usage.input_tokens"), attrs.get("gen_ai.usage.output_tokens"))
        check(usage == (tokens or (None, None)), f"{what}: tokens {usage}, not {tokens}")
        total = sum(tokens) if tokens else None
        check(attrs.get("tokens") == total, f"{what}: tokens {attrs.get('tokens')}, not {total}")
        model = attrs.get("gen_ai.request.model")
        check(model == ("claude-x" if tokens else None), f"{what}: model {model}")
        result = (attrs.get("gate.name"), attrs.get("gate.passed"), attrs.get("gate.reason"))
        check(result == (gate or (None, None, None)), f"{what}: gate {result}, not {gate}")
        strategy = STRATEGY if span in STRATEGY_SPANS else None
        got_strategy = attrs.get("strategy_name")
        check(got_strategy == strategy, f"{what}: strategy_name {got_strategy!r}, not {strategy!r}")
        check(attrs.get("accuracy") == accuracy, f"{what}: accuracy {attrs.get('accuracy')}")

    # The research agent's own search: a root with a design and a training child, and the
    # attributes it reads on them, each with the type it sets.
    children = {ph["name"]: ph["attributes"] for ph in phases if ph["parent_span_id"] == root["span_id"]}
    design, training = children.get("agent.phase.design"), children.get("agent.phase.training")
    check(design is not None and training is not None, f"children of the root: {sorted(children)}")
    if design is not None and training is not None:
        check(design.get("phase") == "designing", f"design span phase {design.get('phase')!r}")
        check(training.get("phase") == "training", f"training span phase {training.get('phase')!r}")
        check(isinstance(design.get("strategy_name"), str), f"design strategy_name {design}")
        check(type(design.get("tokens")) is int, f"design tokens {design}")
        check(type(training.get("accuracy")) is float, f"training accuracy {training}")
    check(any(e["attributes"].get("gate.passed") is False for e in gates), f"no failed gate event: {gates}")
    check(any(e["attributes"].get("gate.passed") is True for e in gates), f"no passed gate event: {gates}")
    if failures:
        print("\n".join(failures))
        return 1
    print(f"traces: run {a.run_id} exported as {len(mine)} spans with {len(gates)} gate events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
