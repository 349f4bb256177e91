#!/usr/bin/env python3
"""Checks the live page's drawing and layout in headless Chromium.

    check_page.py URL --api-key KEY [--out DIR]
    check_page.py URL --api-key KEY --burn-down [--ledger-dir DIR]

The server must require KEY. Chromium is driven over the DevTools protocol, as
check_streams.py does (its Browser), and installed with scripts/install-tools.sh
chromium when missing.

Default checks:
1. Key: opened without `#key=`, the page says how to open it with a key (and
   that the part after # stays in the browser) instead of reconnecting for
   ever; opened with a wrong key, it says the key was refused.
2. Runs per minute: opened with the key, it draws the run ends the check
   drives through the run API (2 completed, 1 failed, 1 cancelled, each with
   a cost) as bars of those outcomes, read back from the bars' data-n.
3. Burn-down, degraded or drawn: the budget card shows the spend line when
   GET /api/v1/budget/history answers, and a plain "no spend history" text
   (with "no forecast" in the note) when the server has no such route.
4. Layout: at 420 px wide nothing scrolls sideways
   (document.scrollingElement.scrollWidth <= innerWidth) and every card fits;
   full-page screenshots at 420 and 1,400 px are written to --out (a new temp
   dir by default, kept) and their paths printed.

--burn-down instead records spends (POST /api/v1/budget/spend) and checks the
drawn spend points against GET /api/v1/budget/history, which must exist: the
line's data-points equal the history's points, each vertex of its path maps
back through the chart's axes to its point within 0.1 px, and the forecast
ends at exhausts_at (or at the reset when it is null). With --ledger-dir the
points are also checked against today's ledger file, line by line.

Exit status: 0 when every check passes, 1 when one fails, 2 when the server
cannot be reached.
"""

import argparse
import base64
import datetime
import json
import os
import re
import sys
import tempfile
import time
import urllib.parse
import uuid

from check_streams import (IO_TIMEOUT_SECONDS, Api, Browser, CheckFailed, Unreachable,
                           find_chromium)

WAIT_SECONDS = 10
# The budget refreshes every 10 s: a spend shows within one refresh.
BUDGET_WAIT_SECONDS = 25
NARROW, WIDE = 420, 1400
OUTCOMES = {"completed": 2, "failed": 1, "cancelled": 1}


class Page:
    """One browser tab on the page, at a given width."""

    def __init__(self, browser):
        self.b = browser

    def open(self, url, width=WIDE, height=900):
        self.size(width, height)
        # A navigation that only changes the fragment would not reload the page.
        self.b.call("Page.navigate", url="about:blank")
        self.b.call("Page.navigate", url=url)

    def size(self, width, height):
        self.b.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                    deviceScaleFactor=1, mobile=False)

    def js(self, expression):
        return self.b.evaluate(expression)

    def wait(self, expression, what, timeout=WAIT_SECONDS):
        self.b.wait_for(expression, what, timeout)

    def screenshot(self, width, path):
        """A full-page PNG at `width`, once the charts are drawn at that width."""
        self.size(width, 900)
        self.wait(f"innerWidth === {width} && {CHARTS_FIT}", f"the charts redrawn at {width} px")
        # The page's own height: scrollHeight would keep a taller viewport's.
        height = self.js("Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)")
        self.size(width, height)
        self.wait(CHARTS_FIT, f"the charts redrawn at {width}x{height}")
        data = self.b.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


# Each drawn chart is as wide as its box: the page has redrawn after a resize.
CHARTS_FIT = ("[...document.querySelectorAll('.chart svg')].every(s => s.style.display === 'none'"
              " || Number(s.getAttribute('width')) === Math.max(240, s.parentNode.clientWidth))")


def page_url(api, key):
    return api.url + "/" + ("#key=" + urllib.parse.quote(key) if key is not None else "")


def check_key(api, page):
    status, _ = Api(api.url, None).call("GET", "/api/v1/status")
    if status != 401:
        raise CheckFailed(f"the server answers {status} without a key: start it with CONDUCTOR_API_KEY")
    page.open(page_url(api, None))
    page.wait("!document.getElementById('auth').hidden", "the key hint")
    text = page.js("document.getElementById('auth').textContent")
    conn = page.js("document.getElementById('conn').textContent")
    want = api.url + "/#key="
    if want not in text or "never sent" not in text or conn != "key needed":
        raise CheckFailed(f"the key hint does not say how to open the page: {text!r}, pill {conn!r}")
    page.open(page_url(api, "wrong-" + uuid.uuid4().hex[:6]))
    page.wait("!document.getElementById('auth').hidden", "the refused-key hint")
    refused = page.js("document.getElementById('auth').textContent")
    if "refused" not in refused or want not in refused:
        raise CheckFailed(f"a wrong key is not said to be refused: {refused!r}")
    print(f"key: without #key= the page says {text.strip()!r}; a wrong key is said to be refused")


RUN_BARS = ("(() => { const n = {completed: 0, failed: 0, cancelled: 0};"
            " for (const r of document.querySelectorAll('#rpm rect[data-n]')) n[r.getAttribute('class')] +="
            " Number(r.dataset.n); return n; })()")


def check_runs_chart(api, page):
    page.open(page_url(api, api.key))
    page.wait("document.getElementById('conn').textContent === 'live'", "a live stream")
    # Once a message posted now is listed, the page has drawn every older
    # event of the stream's tail too, so the bars are counted from there.
    tag = uuid.uuid4().hex[:8]
    api.post("/api/v1/messages", {"type": "note", "body": {"check_page": tag}}, 201)
    page.wait(f"document.getElementById('events').textContent.includes('{tag}')", "the marker message")
    before = page.js(RUN_BARS)
    finish = {"completed": "complete", "failed": "fail", "cancelled": "cancel"}
    n = 0
    for outcome, count in OUTCOMES.items():
        for _ in range(count):
            n += 1
            run_id = f"page-{outcome}-{tag}-{n}"
            api.post("/api/v1/runs", {"run_id": run_id, "agent": "check-page"}, 201)
            api.post(f"/api/v1/runs/{run_id}/{finish[outcome]}", {"cost": 0.25 * n}, 200)
    want = {k: before[k] + OUTCOMES[k] for k in OUTCOMES}
    try:
        page.wait(f"JSON.stringify({RUN_BARS}) === '{json.dumps(want, separators=(',', ':'))}'",
                  f"bars adding up to {want}")
    except CheckFailed as e:
        raise CheckFailed(f"{e}: the bars add up to {page.js(RUN_BARS)}") from e
    note = page.js("document.getElementById('rpm-note').textContent")
    print(f"runs per minute: the bars grew by {OUTCOMES} for the runs driven ({note!r})")


def check_burn_down_shown(api, page):
    status, _ = api.call("GET", "/api/v1/budget/history")
    if status == 200:
        page.wait("document.getElementById('spend-line') !== null", "the spend line", BUDGET_WAIT_SECONDS)
        print("burn-down: the history route answers and the spend line is drawn")
    elif status == 404:
        shown = "(() => { const e = document.querySelector('#burn-box .empty');" \
                " return e && !e.hidden ? e.textContent : ''; })()"
        page.wait(f"{shown}.includes('no spend history')", "the no-history text")
        note = page.js("document.getElementById('budget-note').textContent")
        if "no forecast" not in note:
            raise CheckFailed(f"the budget note does not say 'no forecast': {note!r}")
        print(f"burn-down: no history route (404); the page says {page.js(shown)!r} and {note!r}")
    else:
        raise CheckFailed(f"GET /api/v1/budget/history: status {status}")


def check_layout(api, page, out):
    # A fresh load, so the budget shows the runs the checks above drove.
    page.open(page_url(api, api.key), NARROW)
    page.wait("document.getElementById('conn').textContent === 'live'", "a live stream")
    page.wait("document.getElementById('budget-note').textContent !== 'no budget'", "the budget")
    page.wait(f"innerWidth === {NARROW} && {CHARTS_FIT}", "the page at 420 px")
    scroll, inner = page.js("[document.scrollingElement.scrollWidth, innerWidth]")
    if scroll > inner:
        raise CheckFailed(f"at {NARROW} px the page scrolls sideways: scrollWidth {scroll} > innerWidth {inner}")
    # clientWidth leaves out the scroll bar, which innerWidth counts.
    cut = page.js("[...document.querySelectorAll('.card, #budget-bar, .counter, .chart svg')]"
                  ".filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)"
                  ".map(e => e.id || e.className)")
    if cut:
        raise CheckFailed(f"at {NARROW} px these are cut at the right edge: {cut}")
    paths = []
    for width in (NARROW, WIDE):
        path = os.path.join(out, f"page-{width}.png")
        page.screenshot(width, path)
        paths.append(path)
    print(f"layout: at {NARROW} px scrollWidth {scroll} <= innerWidth {inner}, every card fits")
    for path in paths:
        print(f"screenshot: {path}")


def ledger_points(ledger_dir, date):
    points, micros = [], 0
    with open(os.path.join(ledger_dir, date + ".jsonl")) as f:
        for line in f:
            entry = json.loads(line)
            if "kind" not in entry:  # an alert marker, not a spend
                continue
            micros += entry.get("amount_micros", round(entry["amount"] * 1e6))
            points.append((unix(entry["ts"]), micros / 1e6))
    return points


def path_vertices(d):
    """The (x, y) after each `H x V y` step of the spend line's path."""
    tokens = re.findall(r"([MHV])\s*(-?[\d.]+)(?:\s+(-?[\d.]+))?", d)
    if not tokens or tokens[0][0] != "M":
        raise CheckFailed(f"the spend line's path does not start with M: {d[:80]!r}")
    vertices, x = [], None
    for cmd, a, _ in tokens[1:]:
        if cmd == "H":
            x = float(a)
        elif cmd == "V":
            vertices.append((x, float(a)))
    return vertices


def unix(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def same_points(a, b):
    """Points as equal as the ledger's whole micro-dollars and its ms timestamps allow."""
    return len(a) == len(b) and all(abs(t - u) < 1 and abs(x - y) < 5e-7 for (t, x), (u, y) in zip(a, b))


def check_burn_down(api, page, ledger_dir):
    status, _ = api.call("GET", "/api/v1/budget/history")
    if status != 200:
        raise CheckFailed(f"GET /api/v1/budget/history: status {status} (the burn-down needs that route)")
    tag = uuid.uuid4().hex[:8]
    for i, amount in enumerate((0.40, 1.15, 0.05)):
        api.post("/api/v1/budget/spend", {"amount": amount, "operation_id": f"page-{tag}-{i}"}, 201)
    # A running run holds a reservation for the shaded band.
    held = f"page-held-{tag}"
    api.post("/api/v1/runs", {"run_id": held, "agent": "check-page"}, 201)
    try:
        _, raw = api.call("GET", "/api/v1/budget/history")
        history = json.loads(raw)
        _, raw = api.call("GET", "/api/v1/budget")
        budget = json.loads(raw)
        check_burn_down_drawn(api, page, history, budget, ledger_dir)
    finally:
        api.call("POST", f"/api/v1/runs/{held}/cancel", {})


def check_burn_down_drawn(api, page, history, budget, ledger_dir):
    want = [[p["t"], p["spend"]] for p in history["points"]]
    page.open(page_url(api, api.key))
    line = "document.getElementById('spend-line')"
    page.wait(f"{line} !== null && JSON.parse({line}.dataset.points).length === {len(want)}",
              f"a spend line of {len(want)} points", BUDGET_WAIT_SECONDS)
    drawn = page.js(f"JSON.parse({line}.dataset.points)")
    if not same_points(drawn, want):
        raise CheckFailed(f"drawn points {drawn[-3:]} differ from the history's {want[-3:]}")
    checked = "the history"
    if ledger_dir:
        ledger = ledger_points(ledger_dir, history["date"])
        if not same_points(ledger, want):
            raise CheckFailed(f"the history's points {want[-3:]} differ from the ledger's {ledger[-3:]}")
        checked += " and the ledger"
    # Each vertex of the drawn path, mapped back through the chart's axes.
    axes = page.js("Object.fromEntries(Object.entries(document.getElementById('burn').dataset)"
                   ".map(([k, v]) => [k, Number(v)]))")
    vertices = path_vertices(page.js(f"{line}.getAttribute('d')"))
    if len(vertices) != len(want):
        raise CheckFailed(f"the path has {len(vertices)} steps for {len(want)} points")
    t_per_px = (axes["x1"] - axes["x0"]) / axes["w"]
    usd_per_px = axes["ymax"] / axes["h"]
    for (x, y), (t, spend) in zip(vertices, want):
        drawn_t = axes["x0"] + (x - axes["left"]) * t_per_px
        drawn_spend = (axes["top"] + axes["h"] - y) * usd_per_px
        if abs(drawn_t - t) > 0.1 * t_per_px or abs(drawn_spend - spend) > 0.1 * usd_per_px:
            raise CheckFailed(f"the vertex ({x}, {y}) reads as ({drawn_t}, {drawn_spend}), not ({t}, {spend})")
    band = page.js("(() => { const r = document.querySelector('#burn rect[data-reserved]');"
                   " return r && Number(r.dataset.reserved); })()")
    if band != budget["reserved"] or not band:
        raise CheckFailed(f"the reserved band shows {band}, the budget has {budget['reserved']} reserved")
    end = page.js("(() => { const f = document.getElementById('forecast'); return f && Number(f.dataset.end); })()")
    ex = budget.get("exhausts_at", "absent")
    if budget["today_spend"] >= budget["daily_limit"]:
        if end is not None:
            raise CheckFailed(f"a forecast is drawn for a day already exhausted, to {end}")
        forecast = "the day is exhausted and no forecast is drawn"
    else:
        # The page draws from its own later read of the budget and its own
        # clock's now: the end may move by the seconds between the reads.
        expect = unix(history["reset_at"]) if ex is None else max(time.time() - WAIT_SECONDS, unix(ex))
        if not end or abs(end - expect) > 120:
            raise CheckFailed(f"the forecast ends at {end}, expected about {expect} (exhausts_at {ex})")
        forecast = f"the forecast ends at {'the reset' if ex is None else ex}"
    print(f"burn-down: {len(want)} drawn spend points equal {checked}, each within 0.1 px of its path vertex;"
          f" the reserved band is ${band}; {forecast}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("CONDUCTOR_API_KEY"), required=False)
    parser.add_argument("--out", help="where the screenshots go (default: a new temp dir)")
    parser.add_argument("--burn-down", action="store_true", help="check the burn-down's points only")
    parser.add_argument("--ledger-dir", help="the server's ledger directory, to check the points against")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("--api-key (or CONDUCTOR_API_KEY) is required: the page's key hint is checked")
    api = Api(args.url, args.api_key)
    out = args.out or tempfile.mkdtemp(prefix="conductor-page-")
    os.makedirs(out, exist_ok=True)
    if args.burn_down:
        checks = [("burn-down", lambda p: check_burn_down(api, p, args.ledger_dir))]
    else:
        checks = [
            ("key", lambda p: check_key(api, p)),
            ("runs per minute", lambda p: check_runs_chart(api, p)),
            ("burn-down shown", lambda p: check_burn_down_shown(api, p)),
            ("layout", lambda p: check_layout(api, p, out)),
        ]
    from websockets.sync.client import connect

    failed = 0
    try:
        with Browser(find_chromium()) as browser, connect(
            browser.debugger_url, max_size=None, open_timeout=IO_TIMEOUT_SECONDS
        ) as ws:
            browser.ws = ws
            page = Page(browser)
            for name, check in checks:
                try:
                    check(page)
                except CheckFailed as e:
                    print(f"FAIL {name}: {e}", file=sys.stderr)
                    failed += 1
    except Unreachable as e:
        print(f"FAIL: server unreachable: {e}", file=sys.stderr)
        return 2
    print("all page checks passed" if not failed else f"{failed} page check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
