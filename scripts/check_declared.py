#!/usr/bin/env python3
"""Plays an orchestrator through docs/examples/conductor_client.py and checks the declared series.

    check_declared.py URL --play --save STATE    first scrape, the scenario, then the exact check
    check_declared.py URL --same-as STATE        after a restart: every declared series unchanged

The server must run with `--metrics-file docs/examples/orchestrator-metrics.json`. --play checks
that the first scrape announces all 22 families, reports a run with the client's run calls,
has two bad batches (an undeclared name, a misspelt label) refused without applying their good
updates, then plays a merge with a conflict and its resolution, a clean merge, a merge that
raises, a task that is retried once, and an LLM call that is rate-limited and then succeeds. Both formats are parsed with prometheus_client (the
OpenMetrics one strictly) and must hold exactly the expected declared series. Counts and buckets
are exact; the sums of blocks the client timed are checked against a bound. STATE keeps what the
text parser saw, and --same-as compares a later scrape to it value for value.
Exit status: 0 when every check passes, 1 when one fails.
"""

import argparse
import json
import math
import os
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "docs", "examples"))
from conductor_client import Metrics  # noqa: E402  (found through the path above)

DECLARATIONS = os.path.join(ROOT, "docs", "examples", "orchestrator-metrics.json")
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
MODEL, PROVIDER, PROFILE = "claude-sonnet-4", "anthropic", "default"
# The client times the merge and LLM blocks below; they do no real work, so each is far below
# its histogram's first bucket (0.1 s for both) even on a loaded machine.
TIMED = {"git_merge_duration_seconds": 0.1, "llm_request_duration_seconds": 0.1}
# The families the guide declares: git, tasks, LLM calls and the dispatch loop.
GUIDE_FAMILIES = 22


class RateLimited(Exception):
    """The fake provider's 429."""


def fail(message):
    print("check_declared: " + message, file=sys.stderr)
    sys.exit(1)


def declarations():
    with open(DECLARATIONS, encoding="utf-8") as f:
        return {d["name"]: d for d in json.load(f)}


def scrape(url, openmetrics=False):
    headers = {"Accept": OPENMETRICS_ACCEPT} if openmetrics else {}
    with urllib.request.urlopen(urllib.request.Request(url + "/metrics", headers=headers), timeout=10) as r:
        return r.read().decode("utf-8")


def declared_samples(url, decls, openmetrics=False):
    """Parses a scrape; returns {(sample name, sorted labels): value} of the declared families.

    A bucket's `le` is read as a number, since the formats spell it differently (1 and 1.0).
    `_created` samples, which OpenMetrics may add, are left out.
    """
    text = scrape(url, openmetrics)
    families = list((parse_openmetrics if openmetrics else parse_text)(text))
    samples = {}
    for family in families:
        # The text parser names a counter family without its `_total`, as OpenMetrics does.
        if family.name not in decls and family.name + "_total" not in decls:
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = dict(s.labels)
            if "le" in labels:
                labels["le"] = repr(float(labels["le"]))
            key = (s.name, tuple(sorted(labels.items())))
            if key in samples:
                fail("%s: duplicate series %s" % ("openmetrics" if openmetrics else "text", key))
            samples[key] = s.value
    return samples


def histogram(expected, decl, labels, values, sum_bound=None):
    """Adds the samples of one histogram series holding `values` to `expected`."""
    name = decl["name"]
    for bound in decl["buckets"] + [math.inf]:
        le = dict(labels, le=repr(float(bound)))
        expected[(name + "_bucket", tuple(sorted(le.items())))] = sum(v <= bound for v in values)
    expected[(name + "_count", tuple(sorted(labels.items())))] = len(values)
    expected[(name + "_sum", tuple(sorted(labels.items())))] = sum_bound or sum(values)


def expected_samples(decls):
    """The declared series after play(); a timed histogram's sum is its bound (checked as <)."""
    d = decls
    llm = {"model": MODEL, "provider": PROVIDER}
    e = {}

    def put(name, value, **labels):
        e[(name, tuple(sorted(labels.items())))] = value

    histogram(e, d["git_merge_duration_seconds"], {}, [0, 0, 0], sum_bound=3 * TIMED["git_merge_duration_seconds"])
    put("git_active_merges", 0)
    put("git_merge_total", 1, result="conflict")
    put("git_merge_total", 1, result="success")
    put("git_merge_total", 1, result="error")
    put("git_conflict_resolution_total", 1, result="success", method="llm")
    histogram(e, d["task_execution_duration_seconds"], {"phase": "execute", "worker_profile": PROFILE}, [12.5, 47.5])
    put("tasks_by_state", 1, status="queued")
    put("tasks_by_state", 0, status="running")
    put("tasks_by_state", 1, status="completed")
    histogram(e, d["task_retry_count"], {"worker_profile": PROFILE}, [1])
    put("llm_requests_total", 1, result="rate_limit", **llm)
    put("llm_requests_total", 1, result="success", **llm)
    put("llm_rate_limit_events_total", 1, **llm)
    histogram(e, d["llm_request_duration_seconds"], llm, [0], sum_bound=TIMED["llm_request_duration_seconds"])
    put("llm_tokens_total", 1200, model=MODEL, type="prompt")
    put("llm_tokens_total", 350, model=MODEL, type="completion")
    put("llm_cost_dollars_total", 0.0123, model=MODEL)
    # The unlabelled families the scenario leaves alone are there at zero from the first scrape;
    # the labelled ones have no series until used.
    played = {name for name, _ in e}
    for name, decl in d.items():
        if decl.get("labels") or any(p in played for p in (name, name + "_count")):
            continue
        if decl["type"] == "histogram":
            histogram(e, decl, {}, [])
        else:
            put(name, 0)
    return e


def compare(what, got, expected, bounded=()):
    """Fails unless `got` has exactly the expected series and values; the `_sum` of a histogram
    in `bounded` need only be above 0 and below its expected value."""
    problems = ["missing %s %s" % (k[0], dict(k[1])) for k in sorted(set(expected) - set(got))]
    problems += ["unexpected %s %s = %r" % (k[0], dict(k[1]), got[k]) for k in sorted(set(got) - set(expected))]
    for key in sorted(set(got) & set(expected)):
        name, value, want = key[0], got[key], expected[key]
        if name.endswith("_sum") and name[: -len("_sum")] in bounded:
            ok, wanted = 0 < value < want, "in (0, %r)" % want
        else:
            ok, wanted = value == want, repr(want)
        if not ok:
            problems.append("%s %s = %r, expected %s" % (name, dict(key[1]), value, wanted))
    if problems:
        fail("%s:\n  %s" % (what, "\n  ".join(problems)))
    print("check_declared: %s: %d declared samples as expected" % (what, len(got)))


def check_first_scrape(url, decls):
    """Every declared family is announced with its type before any update."""
    for openmetrics in (False, True):
        text = scrape(url, openmetrics)
        for name, d in decls.items():
            base = name[: -len("_total")] if openmetrics and d["type"] == "counter" else name
            if "# TYPE %s %s\n" % (base, d["type"]) not in text:
                fail("the first %s scrape has no TYPE line for %s" % ("openmetrics" if openmetrics else "text", name))
    print("check_declared: the first scrape announces all %d declared families in both formats" % len(decls))


def expect_refused(metrics, field):
    """The queued batch must be refused whole, naming `field`."""
    try:
        metrics.flush()
    except RuntimeError as e:
        if field not in str(e):
            fail("a bad batch was refused, but not for %s: %s" % (field, e))
        print("check_declared: a bad batch is refused whole: %s" % e)
        return
    fail("a batch with a bad %s was accepted" % field)


def play(metrics):
    """An orchestrator's morning, through the client's public API."""
    # The run calls the client shares with docs/instrumenting.md.
    run = metrics.start_run(work_order_id="WO-e2e-client")
    metrics.events(run, {"type": "phase_started", "phase": "code"},
                   {"type": "phase_completed", "phase": "code", "success": True})
    metrics.complete(run)

    # Two bad batches: each holds a good update first, which must not be applied either.
    metrics.inc("git_merge_total", result="success")
    metrics.inc("git_merges_total", result="success")
    expect_refused(metrics, "updates[1].name")
    metrics.inc("llm_cost_dollars_total", 0.5, model=MODEL)
    metrics.inc("llm_tokens_total", 10, model=MODEL, kind="prompt")
    expect_refused(metrics, "updates[1].labels")

    # Merges: one conflicts and is resolved by the LLM, one is clean, one raises.
    with metrics.track("git_merge", result_default="success") as meta:
        meta["result"] = "conflict"
        metrics.inc("git_conflict_resolution_total", result="success", method="llm")
    with metrics.track("git_merge", result_default="success"):
        pass
    try:
        with metrics.track("git_merge", result_default="success"):
            raise OSError("git merge: index.lock exists")
    except OSError:
        pass

    # Tasks: two queued, one runs, fails its first attempt after 12.5 s and passes its second.
    metrics.set("tasks_by_state", 2, status="queued")
    metrics.set("tasks_by_state", 1, status="queued")
    metrics.set("tasks_by_state", 1, status="running")
    for seconds in (12.5, 47.5):
        metrics.observe("task_execution_duration_seconds", seconds, phase="execute", worker_profile=PROFILE)
    metrics.observe("task_retry_count", 1, worker_profile=PROFILE)
    metrics.set("tasks_by_state", 0, status="running")
    metrics.set("tasks_by_state", 1, status="completed")

    # An LLM call: refused by a rate limit, then answered on the retry.
    answers = iter([RateLimited("429 Too Many Requests"), {"prompt": 1200, "completion": 350}])
    for _attempt in range(2):
        try:
            with metrics.track_llm(MODEL, PROVIDER, rate_limit_errors=(RateLimited,)) as call:
                answer = next(answers)
                if isinstance(answer, Exception):
                    raise answer
                call.update(prompt_tokens=answer["prompt"], completion_tokens=answer["completion"], cost=0.0123)
            break
        except RateLimited:
            continue
    accepted = metrics.flush()
    print("check_declared: played the scenario (%d updates in the last flush)" % accepted)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--play", action="store_true", help="check the first scrape, then play the scenario")
    parser.add_argument("--save", metavar="STATE", help="write the checked series here")
    parser.add_argument("--same-as", metavar="STATE", help="the series must equal these, exactly")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    decls = declarations()
    if len(decls) != GUIDE_FAMILIES:
        fail("%s declares %d families, not the guide's %d" % (DECLARATIONS, len(decls), GUIDE_FAMILIES))

    if args.play:
        check_first_scrape(url, decls)
        play(Metrics(url, max_delay=60))
        text = declared_samples(url, decls)
        compare("text", text, expected_samples(decls), bounded=TIMED)
        openmetrics = declared_samples(url, decls, openmetrics=True)
        compare("openmetrics", openmetrics, expected_samples(decls), bounded=TIMED)
    else:
        text = declared_samples(url, decls)
    if args.same_as:
        with open(args.same_as, encoding="utf-8") as f:
            before = {(k[0], tuple(map(tuple, k[1]))): v for k, v in json.load(f)}
        compare("after the restart", text, before)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as f:
            json.dump([[k, v] for k, v in sorted(text.items())], f)


if __name__ == "__main__":
    main()
