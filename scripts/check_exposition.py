#!/usr/bin/env python3
"""Parses a Prometheus exposition with the reference Python parser and prints what it found.

    check_exposition.py URL_OR_FILE [--openmetrics] [--expect NAME ...]
                        [--expect-exemplar NAME=LABEL ...]

URL_OR_FILE is an http(s) URL, a file, or '-' for stdin. With --openmetrics the scrape asks for
OpenMetrics 1.0 and the strict OpenMetrics parser is used. Prints `families N`, `samples N` and
`exemplars N`. With --expect-exemplar, some sample of family NAME (as --expect names it) must
carry an exemplar with the label LABEL, and each such exemplar is printed as
`exemplar SAMPLE LABEL=VALUE`. Exit status: 0 when it parses and every --expect name and
exemplar is there, 1 when not, 2 when the text cannot be had at all.
"""

import argparse
import sys
import urllib.error
import urllib.request

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
FETCH_TIMEOUT_SECONDS = 10


def fetch(source, openmetrics):
    """Returns (text, content type or None) from a URL, a file or stdin."""
    if source.startswith(("http://", "https://")):
        headers = {"Accept": OPENMETRICS_ACCEPT} if openmetrics else {}
        request = urllib.request.Request(source, headers=headers)
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
            return response.read().decode("utf-8"), response.headers.get("Content-Type")
    if source == "-":
        return sys.stdin.read(), None
    # newline="" keeps a CR inside a label value; universal newlines would split the line.
    with open(source, encoding="utf-8", newline="") as f:
        return f.read(), None


def parse(text, openmetrics):
    """Parses the whole text, so an error anywhere surfaces here."""
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    return list(text_string_to_metric_families(text))


def names_of(family):
    """Every name a user may mean a family by: its own, its samples', and the `_total` form."""
    names = {family.name, family.name + "_total"}
    names.update(sample.name for sample in family.samples)
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", metavar="URL_OR_FILE")
    parser.add_argument("--openmetrics", action="store_true", help="ask for and parse OpenMetrics")
    parser.add_argument(
        "--expect", action="append", default=[], metavar="NAME", help="a family that must exist"
    )
    parser.add_argument(
        "--expect-exemplar",
        action="append",
        default=[],
        metavar="NAME=LABEL",
        help="a family some sample of which has an exemplar with this label",
    )
    args = parser.parse_args()

    try:
        text, content_type = fetch(args.source, args.openmetrics)
    except (OSError, urllib.error.URLError, UnicodeDecodeError) as e:
        print(f"cannot read {args.source}: {e}", file=sys.stderr)
        return 2

    try:
        families = parse(text, args.openmetrics)
    except Exception as e:  # the parsers raise ValueError, but also KeyError and others
        kind = "OpenMetrics" if args.openmetrics else "text format"
        print(f"{kind} parse error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

    if content_type is not None:
        print(f"content_type {content_type}")
    print(f"families {len(families)}")
    print(f"samples {sum(len(family.samples) for family in families)}")
    with_exemplar = [s for family in families for s in family.samples if s.exemplar]
    print(f"exemplars {len(with_exemplar)}")

    known = set()
    for family in families:
        known |= names_of(family)
    missing = [name for name in args.expect if name not in known]
    if missing:
        print(f"missing families: {' '.join(missing)}", file=sys.stderr)
        return 1
    for want in args.expect_exemplar:
        name, _, label = want.partition("=")
        found = [
            (sample.name, sample.exemplar.labels[label])
            for family in families
            if name in names_of(family)
            for sample in family.samples
            if sample.exemplar and label in sample.exemplar.labels
        ]
        for sample, value in found:
            print(f"exemplar {sample} {label}={value}")
        if not found:
            print(f"no exemplar with {label} in {name}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
