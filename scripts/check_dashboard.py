#!/usr/bin/env python3
"""Checks a Grafana dashboard, and optionally rules files, against a live Prometheus.

    check_dashboard.py PROM_URL DASHBOARD_JSON [--panel 'TITLE=EXPR' ...]
                       [--panel-type 'TITLE=TYPE[|TYPE...]' ...]
                       [--alerts RULES_YML]

For every panel target the variables are replaced by what Grafana would send with the
dashboard's defaults, and the expression is run as an instant query; each must return at least
one series with a number, not NaN (`panel TITLE: N series, M NaN`). Grafana's own variables
become fixed values ($__rate_interval 1m, $__interval 15s, $__range 1h); a template variable
that offers "All" becomes its allValue (`.*` without one, as Grafana's regex for all), and any
other its current value, or the first of its options. A variable that is neither fails the
target. When the dashboard has an `instance` variable, every vector selector must filter on
`instance=~"$instance"`, so the instance picker applies to all panels. Every metric name the
expressions use must be one the server has series for.

With --panel, given once per panel, the dashboard must have exactly those panels: the same
titles, rows included, each with one query whose expression is EXPR verbatim. With
--panel-type, each panel it names must exist and be of one of the types given (`graph|timeseries`
for a source's graph panel that Grafana now draws as a timeseries). With --alerts,
every rule expression in the file must be accepted by the server: it need not return series,
but a parse error (HTTP 400) or an evaluation error (HTTP 422) fails.

Run it against a Prometheus that has scraped conductor-metrics after some traffic: labelled
families such as agent_gate_results_total show only HELP and TYPE, so Prometheus has no
series and no name for them, until used. Exit status: 0 when everything passes, 1 when any
check fails, 2 when the files cannot be read or the server cannot be reached.
"""

import argparse
import json
import math
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

QUERY_TIMEOUT_SECONDS = 10

# What Grafana's own variables become in a query, as Grafana would send them for a recent range
# at a 15 s scrape interval. $datasource only appears in datasource fields, never in an
# expression; the dashboard's template variables come from its templating list.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format} and the deprecated [[name]]. A name never starts with a digit,
# which keeps label_replace's "$1" alone.
VARIABLE_RE = re.compile(r"\$\{([a-zA-Z_]\w*)(?::\w+)?\}|\$([a-zA-Z_]\w*)|\[\[([a-zA-Z_]\w*)\]\]")

# Words PromQL reserves that would look like metric names when not followed by "(".
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Keywords followed by a parenthesised list of label names, not of expressions.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
INSTANCE_MATCHER = 'instance=~"$instance"'
# The matcher in any spelling Grafana expands the same way: $instance, ${instance}, ${instance:regex}.
INSTANCE_MATCHER_RE = re.compile(r'instance=~"\$(?:instance\b|\{instance(?::\w+)?\})"')


class Failure(Exception):
    """A query the server refused or that could not be sent."""


def variable_value(variable):
    """Returns what a template variable stands for with the dashboard's defaults, or None.

    "All" is what a multi-value picker starts on, so a variable that offers it stands for its
    allValue, or `.*`, the regex Grafana sends for all when there is none. Any other stands for
    its current value, or the first of its options (a custom variable's comma-separated query).
    """
    if variable.get("includeAll"):
        return variable.get("allValue") or ".*"
    current = (variable.get("current") or {}).get("value")
    if isinstance(current, list):
        current = current[0] if len(current) == 1 else None
    if current not in (None, ""):
        return str(current)
    options = [o.get("value") for o in variable.get("options") or [] if o.get("value") not in (None, "")]
    if options:
        return str(options[0])
    query = variable.get("query")
    if variable.get("type") in ("custom", "constant", "textbox", "interval") and isinstance(query, str) and query:
        return query.split(",")[0].strip()
    return None


def dashboard_variables(dashboard):
    """Returns {name: value} for Grafana's own variables and the dashboard's template variables."""
    values = dict(BUILTIN_VARIABLES)
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        value = variable_value(variable)
        if value is not None:
            values[variable.get("name")] = value
    return values


def substitute(expr, variables):
    """Returns expr with every known variable replaced, and the names of unknown ones."""
    unknown = []

    def replace(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name in variables:
            return variables[name]
        unknown.append(name)
        return match.group(0)

    return VARIABLE_RE.sub(replace, expr), unknown


def skip_string(expr, i):
    """Returns the index just past the string literal that starts at expr[i]."""
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    return i + 1


def tokens(expr):
    """Splits PromQL into the tokens that matter for finding selectors.

    Yields (kind, text) with kind one of ident, matchers ({...}), "(", ")" and other; strings,
    numbers, durations, ranges and comments come out as other, so nothing inside them is taken
    for a metric name.
    """
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "\"'`":
            i = skip_string(expr, i)
            yield "other", ""
        elif c == "#":
            while i < n and expr[i] != "\n":
                i += 1
        elif c in "{[":
            close = "}" if c == "{" else "]"
            start = i
            while i < n and expr[i] != close:
                i = skip_string(expr, i) if expr[i] in "\"'`" else i + 1
            i += 1
            yield ("matchers" if c == "{" else "other"), expr[start:i]
        elif c.isdigit() or (c == "." and expr[i + 1 : i + 2].isdigit()):
            while i < n and (expr[i].isalnum() or expr[i] in "._"):
                i += 1
            yield "other", ""
        elif c.isalpha() or c in "_:":
            start = i
            while i < n and (expr[i].isalnum() or expr[i] in "_:"):
                i += 1
            yield "ident", expr[start:i]
        else:
            i += 1
            yield (c if c in "()" else "other"), c


def selectors(expr):
    """Returns (metric name or None, matchers text) for every vector selector in expr."""
    toks = list(tokens(expr))
    found = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "ident" and text.lower() in LABEL_LIST_KEYWORDS and following[0] == "(":
            while i < len(toks) and toks[i][0] != ")":
                i += 1
        elif kind == "ident" and following[0] == "ident" and following[1].lower() in ("by", "without"):
            pass  # an aggregation written `sum by (...) (...)`
        elif kind == "ident" and text.lower() not in KEYWORDS | LABEL_LIST_KEYWORDS and following[0] != "(":
            matchers = following[1] if following[0] == "matchers" else ""
            found.append((text, matchers))
            i += 1 if matchers else 0
        elif kind == "matchers":
            found.append((None, text))
        i += 1
    return found


def metric_names(expr):
    """Returns the metric names an expression selects by name."""
    return {name for name, _ in selectors(expr) if name}


def selectors_without_instance(expr):
    """Returns the vector selectors in expr (before substitution) that skip the instance matcher."""
    return [
        (name or "") + matchers
        for name, matchers in selectors(expr)
        if not INSTANCE_MATCHER_RE.search(re.sub(r"\s+", "", matchers))
    ]


def get_json(url, params=None):
    """GETs a Prometheus API URL and returns the decoded `data`; raises Failure with its error."""
    query = "?" + urllib.parse.urlencode(params) if params else ""
    try:
        with urllib.request.urlopen(url + query, timeout=QUERY_TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        # Prometheus explains a refused query in the JSON body of the error response.
        try:
            body = json.load(e)
            detail = "%s: %s" % (body.get("errorType"), body.get("error"))
        except ValueError:
            detail = e.reason
        kind = {400: "parse error", 422: "evaluation error"}.get(e.code, "HTTP %d" % e.code)
        raise Failure("%s (HTTP %d): %s" % (kind, e.code, detail)) from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise Failure("cannot query %s: %s" % (url, e)) from e
    if body.get("status") != "success":
        raise Failure("%s: %s" % (body.get("errorType"), body.get("error")))
    return body["data"]


def is_nan(value):
    """True when a sample value as the API writes it ("NaN", "1.5", "+Inf") is not a number."""
    return math.isnan(float(value))


def instant_query(prom_url, expr):
    """Runs expr as an instant query; returns (series, series whose value is NaN).

    A scalar counts as one series. A panel whose every value is NaN (a ratio or a quantile of
    nothing) draws nothing, so the NaN count tells such a panel apart from one with data.
    """
    data = get_json(prom_url + "/api/v1/query", {"query": expr})
    if data["resultType"] == "vector":
        return len(data["result"]), sum(is_nan(r["value"][1]) for r in data["result"])
    if data["resultType"] == "matrix":
        nan = sum(all(is_nan(v) for _, v in r["values"]) for r in data["result"])
        return len(data["result"]), nan
    return 1, int(is_nan(data["result"][1]))


def panels_of(dashboard):
    """Yields every panel, including those folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables_of(dashboard):
    """Returns the names of the dashboard's template variables."""
    return {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}


def check_dashboard(prom_url, dashboard):
    """Queries every target; returns (failure lines, metric names used).

    A dashboard without an `instance` variable (agent-research, whose queries are another
    system's, verbatim) has no picker to apply, so its selectors are not held to the matcher.
    """
    failures = []
    names = set()
    need_instance = "instance" in variables_of(dashboard)
    variables = dashboard_variables(dashboard)
    for panel in panels_of(dashboard):
        title = panel.get("title", "<untitled>")
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        if not targets:
            continue
        empty = []
        series = 0
        nan = 0
        for target in targets:
            expr = target["expr"]
            label = "panel %s [%s]" % (title, target.get("refId", "?"))
            for selector in selectors_without_instance(expr) if need_instance else []:
                failures.append("%s: selector without %s: %s" % (label, INSTANCE_MATCHER, selector))
            query, unknown = substitute(expr, variables)
            if unknown:
                failures.append("%s: unknown variables %s" % (label, ", ".join(sorted(set(unknown)))))
                continue
            names |= metric_names(query)
            try:
                count, count_nan = instant_query(prom_url, query)
            except Failure as e:
                failures.append("%s: %s" % (label, e))
                continue
            series += count
            nan += count_nan
            if count == count_nan:
                empty.append(target.get("refId", "?"))
        print("panel %s: %d series, %d NaN" % (title, series, nan))
        if empty:
            failures.append("panel %s: no series with a number for %s" % (title, ", ".join(empty)))
    return failures, names


def parse_panel_spec(spec):
    """Splits a --panel argument at its first "=": the title never holds one, PromQL may."""
    title, sep, expr = spec.partition("=")
    if not sep or not title or not expr:
        raise argparse.ArgumentTypeError("expected TITLE=EXPR, got %r" % spec)
    return title, expr


def check_exact_panels(dashboard, expected):
    """Returns failure lines unless the panels are exactly `expected` [(title, expr)]."""
    failures = []
    want = dict(expected)
    if len(want) != len(expected):
        return ["--panel: a title is given twice"]
    have = {}
    for panel in panels_of(dashboard):
        title = panel.get("title", "<untitled>")
        if title in have:
            failures.append("panel %s: title used twice" % title)
        have[title] = [t.get("expr") for t in panel.get("targets", []) if t.get("expr")]
    for title in sorted(set(have) - set(want)):
        failures.append("panel %s: not an expected panel" % title)
    for title, expr in expected:
        if title not in have:
            failures.append("panel %s: missing" % title)
        elif have[title] != [expr]:
            failures.append("panel %s: queries %s, expected exactly [%r]" % (title, have[title], expr))
    if not failures:
        print("panels: exactly the %d expected, expressions verbatim" % len(expected))
    return failures


def parse_type_spec(spec):
    """Splits a --panel-type argument, TITLE=TYPE[|TYPE...], at its last "="."""
    title, sep, types = spec.rpartition("=")
    allowed = [t for t in types.split("|") if t]
    if not sep or not title or not allowed:
        raise argparse.ArgumentTypeError("expected TITLE=TYPE[|TYPE...], got %r" % spec)
    return title, allowed


def check_panel_types(dashboard, expected):
    """Returns failure lines for the panels of `expected` [(title, [types])] of another type."""
    failures = []
    types = {}
    for panel in panels_of(dashboard):
        types.setdefault(panel.get("title", "<untitled>"), []).append(panel.get("type"))
    for title, allowed in expected:
        if title not in types:
            failures.append("panel %s: missing (expected type %s)" % (title, " or ".join(allowed)))
            continue
        for kind in types[title]:
            if kind not in allowed:
                failures.append("panel %s: type %s, expected %s" % (title, kind, " or ".join(allowed)))
    if not failures:
        print("panel types: the %d named panels have their types" % len(expected))
    return failures


def check_names(prom_url, names):
    """Returns failure lines for the metric names the server has no series for."""
    try:
        exported = set(get_json(prom_url + "/api/v1/label/__name__/values"))
    except Failure as e:
        return ["metric names: %s" % e]
    missing = sorted(names - exported)
    print("metric names: %d used, %d not exported" % (len(names), len(missing)))
    return ["metric not exported: %s" % name for name in missing]


def rule_exprs(text):
    """Returns (rule name, expr) for every rule in a Prometheus rules file.

    A small reader for the shapes rule files take (plain, quoted, and `|`/`>` block scalars)
    keeps the script on the standard library; PromQL ignores the newlines a block keeps.
    """
    rules = []
    name = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        named = re.match(r"\s*(?:-\s+)?(alert|record):\s*(.+?)\s*$", line)
        if named:
            name = "%s %s" % (named.group(1), named.group(2).strip("'\""))
            continue
        found = re.match(r"(\s*)(?:-\s+)?expr:\s*(.*?)\s*$", line)
        if not found:
            continue
        value = found.group(2)
        if value[:1] in ("|", ">"):
            indent = len(found.group(1))
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            value = "\n".join(part for part in block if part)
        elif value.startswith('"'):
            value = json.loads(value)
        elif value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        else:
            value = re.sub(r"\s+#.*$", "", value)
        rules.append((name or "rule at line %d" % i, value))
        name = None
    return rules


def check_alerts(prom_url, path):
    """Returns failure lines for the rule expressions in path that the server refuses."""
    with open(path, encoding="utf-8") as f:
        rules = rule_exprs(f.read())
    if not rules:
        return ["%s: no rule expressions found" % path]
    failures = []
    for name, expr in rules:
        try:
            instant_query(prom_url, expr)
        except Failure as e:
            failures.append("%s: %s" % (name, e))
            continue
        print("%s: parses" % name)
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prom_url", help="base URL of Prometheus, e.g. http://127.0.0.1:9090")
    parser.add_argument("dashboard", help="Grafana dashboard JSON file")
    parser.add_argument(
        "--panel",
        action="append",
        default=[],
        type=parse_panel_spec,
        metavar="TITLE=EXPR",
        help="an expected panel; given at all, the dashboard must have exactly these",
    )
    parser.add_argument(
        "--panel-type",
        action="append",
        default=[],
        type=parse_type_spec,
        metavar="TITLE=TYPE[|TYPE...]",
        help="a panel that must be of one of these types",
    )
    parser.add_argument("--alerts", help="Prometheus rules file whose expressions must parse")
    args = parser.parse_args()
    prom_url = args.prom_url.rstrip("/")

    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as e:
        print("cannot read dashboard %s: %s" % (args.dashboard, e), file=sys.stderr)
        return 2

    # One probe first, so an unreachable server is one message rather than one per query.
    try:
        get_json(prom_url + "/api/v1/status/buildinfo")
    except Failure as e:
        print("cannot check against %s: %s" % (prom_url, e), file=sys.stderr)
        return 2

    failures = check_exact_panels(dashboard, args.panel) if args.panel else []
    failures += check_panel_types(dashboard, args.panel_type) if args.panel_type else []
    more, names = check_dashboard(prom_url, dashboard)
    failures += more
    if not names:
        failures.append("no metric names found in %s" % args.dashboard)
    failures += check_names(prom_url, names)
    if args.alerts:
        try:
            failures += check_alerts(prom_url, args.alerts)
        except (OSError, ValueError) as e:
            print("cannot read rules %s: %s" % (args.alerts, e), file=sys.stderr)
            return 2

    if failures:
        print("FAILED:", file=sys.stderr)
        for line in failures:
            print("  " + line, file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
