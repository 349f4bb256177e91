#!/usr/bin/env python3
"""Checks the hostile-label samples that `cargo test --test exposition` writes
(target/tmp/exposition/) with Python's prometheus_client parsers: the text and
the strict OpenMetrics parser must both yield exactly the expected series, and
the OpenMetrics parser exactly the expected exemplars (labels, value and
timestamp), which text format 0.0.4 does not carry."""
import json
import math
import sys
from pathlib import Path

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text


def read(path: Path) -> str:
    # newline="" keeps a CR inside a label value intact.
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def samples(families, name):
    return sorted(
        (json.dumps(s.labels, sort_keys=True), float(s.value))
        for f in families
        for s in f.samples
        if s.name == name
    )


def exemplars(families):
    """Each sample's exemplar as the test writes it, as sorted JSON text."""
    found = []
    for f in families:
        for s in f.samples:
            e = getattr(s, "exemplar", None)
            if e is None:
                continue
            exemplar = {"labels": e.labels, "value": float(e.value), "timestamp": float(e.timestamp)}
            found.append(
                json.dumps({"name": s.name, "labels": s.labels, "exemplar": exemplar}, sort_keys=True)
            )
    return found


def main() -> int:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "target/tmp/exposition")
    expected = sorted(
        (json.dumps(e["labels"], sort_keys=True), float(e["value"]))
        for e in json.loads(read(d / "hostile.expected.json"))
    )
    text = list(parse_text(read(d / "hostile.prom")))
    om = list(parse_openmetrics(read(d / "hostile.om")))
    failures = 0
    for label, fams in (("text", text), ("openmetrics", om)):
        got = samples(fams, "hostile_labels_total")
        if got != expected:
            print(f"{label}: {len(got)} series parsed, {len(expected)} expected")
            failures += 1
        names = {f.name for f in fams}
        for want in ("hostile_duration_seconds", "hostile_value_bytes"):
            if want not in names:
                print(f"{label}: family {want} missing")
                failures += 1
        for f in fams:
            for s in f.samples:
                if s.name == "hostile_duration_seconds_count":
                    buckets = [
                        b for b in f.samples
                        if b.name.endswith("_bucket") and b.labels["a"] == s.labels["a"]
                    ]
                    inf = [b for b in buckets if math.isinf(float(b.labels["le"]))]
                    if not inf or inf[0].value != s.value:
                        print(f"{label}: +Inf bucket != _count for {s.labels}")
                        failures += 1
        print(f"exposition_{label}_series {len(samples(fams, 'hostile_labels_total'))} series")
    want = sorted(json.dumps(e, sort_keys=True) for e in json.loads(read(d / "hostile.exemplars.json")))
    for label, fams, expect in (("text", text, []), ("openmetrics", om, want)):
        got = sorted(exemplars(fams))
        if got != expect:
            print(f"{label}: {len(got)} exemplars parsed, {len(expect)} expected")
            for e in sorted(set(got) ^ set(expect))[:3]:
                print(f"  differs: {e}")
            failures += 1
        print(f"exposition_{label}_exemplars {len(got)} exemplars")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
