#!/usr/bin/env python3
"""Compares the figures the docs quote with a running release binary, so that they cannot drift.

scripts/check_doc_figures.sh starts the server and hands over what it measured; this script reads
the docs and compares:

  idle threads   "An idle server has N threads" (docs/operations.md) and "an idle server has N
                 threads" (README.md), against the threads of a fresh server after one request
  binary size    "The release binary is N MiB" (docs/operations.md), against the release
                 binary, within 0.05 MiB (the docs give two decimals)
  series bound   the "Series bound" table of docs/operations.md:
                 - the fixed row, and each of its parts, against a fresh server's scrape;
                 - each other row's family is served, its "A x B = C" adds up, the method and
                   status counts of conductor_api_requests_total are those of the code, and a
                   histogram row's B is the series one label set of it has;
                 - the rows add up to the bound the docs quote, every other place they quote it
                   (and SERIES_BOUND in scripts/chaos.sh) says the same, and the bound with the
                   payload families adds up.

Every figure is printed as `doc_<name> <actual> <unit>`, with the quoted value beside it, so the
docs can be corrected from the output; any mismatch fails.

Usage: check_doc_figures.py --threads N --binary BYTES --fresh SCRAPE --busy SCRAPE [ROOT]
  --fresh: /metrics of a fresh server after one GET /healthz, before anything else
  --busy:  /metrics after one run completed and one message appended
"""
import argparse
import pathlib
import re
import sys

ROOT_DEFAULT = pathlib.Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
SIZE_TOLERANCE_MIB = 0.05
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

failures = []


def figure(name, actual, unit, quoted):
    print(f"doc_{name} {actual} {unit} (the docs say {quoted})")
    if str(actual) != str(quoted):
        failures.append(f"{name}: the docs say {quoted}, the binary has {actual}")


def number(text):
    return int(text.replace(",", ""))


def one(pattern, text, where):
    m = re.search(pattern, text, re.S)
    if not m:
        sys.exit(f"check_doc_figures: {where}: no match for {pattern!r}; the docs changed shape")
    return m


def series_by_family(scrape):
    """{family: [(sample name, labels text)]} from a text-format scrape, grouped by # TYPE."""
    types = {}
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
    families = {name: [] for name in types}
    for line in scrape.splitlines():
        if not line or line.startswith("#"):
            continue
        sample = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?", line)
        name, labels = sample.group(1), sample.group(2) or ""
        family = name
        if name not in types:
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in types:
                    family = name[: -len(suffix)]
        families.setdefault(family, []).append((name, labels))
    return types, families


def code_counts(root):
    """The method labels and status labels conductor_api_requests_total can take, from the code."""
    exchange = (root / "src/http/exchange.rs").read_text()
    known = one(r"const KNOWN: \[&str; (\d+)\]", exchange, "src/http/exchange.rs")
    answer = (root / "src/http/wire.rs").read_text()
    statuses = one(r"const STATUSES: \[\(u16, &str, &str\); (\d+)\]", answer, "src/http/wire.rs")
    # Each known method, and OTHER; each status, and `other`.
    return int(known.group(1)) + 1, int(statuses.group(1)) + 1


def check_threads(root, threads):
    ops = (root / "docs/operations.md").read_text()
    quoted = one(r"An idle server has (\d+) threads", ops, "docs/operations.md").group(1)
    figure("idle_threads_operations", threads, "threads", quoted)
    readme = (root / "README.md").read_text()
    quoted = one(r"an idle server has (\d+) threads", readme, "README.md").group(1)
    figure("idle_threads_readme", threads, "threads", quoted)


def check_binary(root, size):
    ops = (root / "docs/operations.md").read_text()
    quoted = float(one(r"The release binary is ([\d.]+) MiB", ops, "docs/operations.md").group(1))
    actual = size / MIB
    print(f"doc_binary_mib {actual:.2f} MiB (the docs say {quoted:.2f}; {size} bytes)")
    if abs(actual - quoted) > SIZE_TOLERANCE_MIB:
        failures.append(f"binary size: the docs say {quoted:.2f} MiB, the binary is {actual:.2f} MiB")


def check_series(root, fresh, busy):
    ops = (root / "docs/operations.md").read_text()
    section = one(r"\n## Series bound\n(.*?)\n## ", ops, "docs/operations.md").group(1)
    bound = number(one(r"\*\*([\d,]+) series\*\*", section, "Series bound").group(1))
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    rows = [r for r in rows if r[0].strip() not in ("families", "---")]
    types, fresh_families = series_by_family(fresh)
    _, busy_families = series_by_family(busy)

    labelled = {}
    listed = {}
    fixed_row = None
    for families, count, why in rows:
        named = re.findall(r"`([a-z_:]+)`", families)
        if families.strip() == "the fixed ones":
            fixed_row = (count.strip(), why)
            continue
        if len(named) != 1:
            failures.append(f"series table: the row {families.strip()!r} names no single family")
            continue
        labelled[named[0]] = count.strip()
        # "`outcome` is `completed`, `failed` or `cancelled`": the values a label takes.
        values = re.match(r"`([a-z_]+)` is ((?:`[^`]+`(?:, | or )?)+)", why.strip())
        if values:
            listed[named[0]] = (values.group(1), re.findall(r"`([^`]+)`", values.group(2)))

    # Every series of a fresh server is a fixed one, but for those of the bounded rows.
    fixed = {f: s for f, s in fresh_families.items() if f not in labelled and s}
    total_fixed = sum(len(s) for s in fixed.values())
    quoted_fixed, why = fixed_row
    figure("series_fixed", total_fixed, "series", number(quoted_fixed))
    parts = {}
    for name, detail in re.findall(r"`([a-z_:*]+)` \(([^)]*)\)", why):
        parts[name] = number(re.findall(r"\d[\d,]*", detail)[-1])
    named = set()
    for name, quoted in parts.items():
        if name.endswith("*"):
            members = [f for f in fixed if f.startswith(name[:-1])]
        else:
            members = [name]
        named.update(members)
        actual = sum(len(fixed.get(f, [])) for f in members)
        figure(f"series_fixed_{name.rstrip('_*')}", actual, "series", quoted)
    unlabelled = [f for f, s in fixed.items() if f not in named and len(s) == 1 and not s[0][1]]
    quoted = number(one(r"(\d+) unlabelled gauges and counters", why, "the fixed row").group(1))
    figure("series_fixed_unlabelled", len(unlabelled), "series", quoted)
    rest = sorted(f for f in fixed if f not in named and f not in unlabelled)
    if rest:
        failures.append(f"series table: the fixed row does not account for {rest}")

    methods, statuses = code_counts(root)
    row_total = total_fixed
    for family, count in labelled.items():
        if family not in types:
            failures.append(f"series table: {family} is not served")
            continue
        product = re.fullmatch(r"([\d,]+) × ([\d,]+) = ([\d,]+)", count)
        if family in listed:
            label, values = listed[family]
            # A family shown from the start with the same label says which values it takes.
            for other, series in fresh_families.items():
                shown = sorted({v for _, l in series for v in re.findall(rf'\b{label}="([^"]*)"', l)})
                if shown and shown != sorted(values):
                    failures.append(
                        f"series table: {family}: the row lists {label} {values}, "
                        f"{other} shows {shown} from the start"
                    )
            quoted = number(product.group(1)) if product else number(count)
            figure(f"series_{family}_{label}_values", len(values), "values", quoted)
        if product:
            a, b, c = (number(x) for x in product.groups())
            if a * b != c:
                failures.append(f"series table: {family}: {a} × {b} is not {c}")
            if family == "conductor_api_requests_total":
                figure("series_api_methods", methods, "labels", a)
                figure("series_api_statuses", statuses, "labels", b)
            elif types[family] == "histogram":
                sets = {}
                for name, labels in busy_families.get(family, []):
                    key = re.sub(r',?le="[^"]*"', "", labels)
                    sets[key] = sets.get(key, 0) + 1
                per_set = max(sets.values(), default=0)
                figure(f"series_{family}_per_label_set", per_set, "series", b)
            row_total += c
        else:
            row_total += number(count)
        print(f"doc_series_{family}_busy {len(busy_families.get(family, []))} series (after one run)")
    figure("series_bound_rows", row_total, "series", bound)

    # Every other place that quotes the bound.
    # The Checks table's bound (the Measured table keeps the bound of its day).
    for m in re.finditer(r"\| `cardinality_series_max` \| see [^|]*\| ≤ ([\d,]+) \|", ops):
        figure("series_bound_checks_table", bound, "series", number(m.group(1)))
    for m in re.finditer(r"at or under\s+([\d,]+)", section):
        figure("series_bound_chaos_text", bound, "series", number(m.group(1)))
    chaos = (root / "scripts/chaos.sh").read_text()
    quoted = one(r"readonly SERIES_BOUND=(\d+)", chaos, "scripts/chaos.sh").group(1)
    figure("series_bound_chaos_sh", bound, "series", number(quoted))
    payload = one(
        r"the bound is ([\d,]+) \+ ([\d,]+) × (\d+).*?\+\s+([\d,]+) × (\d+).*?= ([\d,]+)",
        section,
        "the payload bound",
    )
    base, cap1, n1, cap2, n2, total = (number(x) for x in payload.groups())
    figure("series_bound_payload_base", bound, "series", base)
    if base + cap1 * n1 + cap2 * n2 != total:
        failures.append(f"series bound: {base} + {cap1} × {n1} + {cap2} × {n2} is not {total}")
    print(f"doc_series_bound_payload {base + cap1 * n1 + cap2 * n2} series (the docs say {total})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--binary", type=int, required=True, help="the release binary's bytes")
    parser.add_argument("--fresh", type=pathlib.Path, required=True)
    parser.add_argument("--busy", type=pathlib.Path, required=True)
    parser.add_argument("root", nargs="?", type=pathlib.Path, default=ROOT_DEFAULT)
    args = parser.parse_args()
    check_threads(args.root, args.threads)
    check_binary(args.root, args.binary)
    check_series(args.root, args.fresh.read_text(), args.busy.read_text())
    if failures:
        for f in failures:
            print(f"check_doc_figures: {f}", file=sys.stderr)
        sys.exit(1)
    print("check_doc_figures: ok")


if __name__ == "__main__":
    main()
