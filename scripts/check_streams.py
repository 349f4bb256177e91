#!/usr/bin/env python3
"""Checks the live progress streams and page of a running conductor-metrics.

    check_streams.py URL [--api-key KEY] [--subscribers N] [--trials N] [--no-browser]

1. WebSocket: subscribes to /api/v1/ws?run_id=... with a real client (the `websockets`
   package, sync API), checks a ping is answered, drives one run through the HTTP API and
   checks its events arrive as JSON text frames in seq order, with the expected types.
2. AgentGate's dashboard stream: subscribes to /ws with a real client, drives one run through
   AgentGate-style progress events (POST /api/v1/events, with a `metrics` object spelt as no
   JSON library would re-print it) and one through the run API, and checks that only the
   frames iteration:started, iteration:completed, phase:completed and run:completed arrive,
   each with exactly its keys in the broadcaster's order, and the metrics byte for byte.
3. SSE latency: keeps /api/v1/events open and, for each of --trials messages, measures the
   time from sending the POST to reading its message_appended event. Prints
   `sse_latency_ms <median> ms` and the spread; the time includes the durable write.
4. Many subscribers: opens --subscribers SSE streams (default 500), checks the subscriber
   gauge counts them and times GET /metrics while they are open
   (`metrics_ms_with_<N>_subscribers`).
5. Live page: starts a run, loads URL/ in headless Chromium and checks the page lists the run
   with its phase, goes live, shows a phase change pushed over SSE, drops the run when it
   completes and lists run_completed among the last events. The DOM is read over the
   DevTools protocol (see Browser for why not --dump-dom). Chromium is installed with
   scripts/install-tools.sh chromium when missing.

Exit status: 0 when every check passes, 1 when one fails, 2 when the server cannot be reached.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

IO_TIMEOUT_SECONDS = 10
EVENT_TIMEOUT_SECONDS = 5
BROWSER_TIMEOUT_SECONDS = 60
RUN_EVENT_TYPES = [
    "run_started",
    "iteration_started",
    "phase_started",
    "phase_completed",
    "gate_checked",
    "iteration_completed",
    "delivery_started",
    "delivery_completed",
    "message_appended",
    "run_completed",
]


class CheckFailed(Exception):
    """A check did not hold."""


class Unreachable(Exception):
    """The server could not be reached."""


class Api:
    """The HTTP API of one server."""

    def __init__(self, url, key):
        self.url = url.rstrip("/")
        self.key = key
        parts = urllib.parse.urlsplit(self.url)
        self.host = parts.hostname
        self.port = parts.port or 80

    def headers(self):
        return {"Authorization": "Bearer " + self.key} if self.key else {}

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", **self.headers()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=IO_TIMEOUT_SECONDS) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"{method} {path}: {e}") from e

    def post(self, path, body, expect):
        return self.post_text(path, json.dumps(body), expect)

    def post_text(self, path, text, expect):
        """POSTs `text` as it is, for JSON whose spelling matters."""
        req = urllib.request.Request(
            self.url + path, data=text.encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", **self.headers()})
        try:
            with urllib.request.urlopen(req, timeout=IO_TIMEOUT_SECONDS) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(f"POST {path}: {e}") from e
        if status != expect:
            raise CheckFailed(f"POST {path}: status {status}, expected {expect}: {raw[:300]!r}")
        return json.loads(raw)


class SseStream:
    """A raw SSE client: reads the chunked body as it arrives, event by event."""

    def __init__(self, api, path):
        try:
            self.sock = socket.create_connection((api.host, api.port), timeout=IO_TIMEOUT_SECONDS)
        except OSError as e:
            raise Unreachable(f"connect {api.host}:{api.port}: {e}") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = "".join(f"{k}: {v}\r\n" for k, v in api.headers().items())
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {api.host}:{api.port}\r\n"
            f"Accept: text/event-stream\r\n{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        self.buf = b""
        self.text = ""
        head = self._until(b"\r\n\r\n").decode("latin-1")
        self.status = int(head.split(" ", 2)[1])
        if self.status != 200:
            raise CheckFailed(f"GET {path}: status {self.status}")

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise CheckFailed("the event stream ended")
        self.buf += data

    def _until(self, sep):
        while sep not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(sep, 1)
        return head

    def _exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next_event(self, timeout):
        """The next event as (type, data), skipping comments; raises on timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                while "\n\n" in self.text:
                    block, self.text = self.text.split("\n\n", 1)
                    kind, data = "message", None
                    for line in block.split("\n"):
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                    if data is not None:
                        return kind, data
                size = int(self._until(b"\r\n"), 16)
                if size == 0:
                    raise CheckFailed("the event stream ended")
                self.text += self._exactly(size).decode()
                self._exactly(2)
        except socket.timeout as e:
            raise CheckFailed(f"no event within {timeout}s") from e

    def close(self):
        self.sock.close()


def drive_run(api, run_id):
    api.post("/api/v1/runs", {"run_id": run_id, "agent": "check-streams", "work_order_id": "WO-check"}, 201)
    api.post(
        f"/api/v1/runs/{run_id}/events",
        [
            {"type": "iteration_started", "iteration": 1},
            {"type": "phase_started", "phase": "plan", "iteration": 1},
            {"type": "tokens", "phase": "plan", "input_tokens": 100, "output_tokens": 20},
            {"type": "phase_completed", "phase": "plan", "success": True},
            {"type": "gate_checked", "gate": "lint", "passed": True},
            {"type": "iteration_completed", "iteration": 1, "success": True},
            {"type": "delivery_started"},
            {"type": "delivery_completed", "success": True},
        ],
        200,
    )
    api.post("/api/v1/messages", {"type": "note", "body": {"run": run_id}, "run_id": run_id}, 201)
    api.post(f"/api/v1/runs/{run_id}/complete", {}, 200)


def check_websocket(api):
    from websockets.sync.client import connect

    run_id = "ws-check-" + uuid.uuid4().hex[:8]
    ws_url = "ws" + api.url[len("http"):] + "/api/v1/ws?run_id=" + run_id
    try:
        ws = connect(ws_url, additional_headers=api.headers(), open_timeout=IO_TIMEOUT_SECONDS)
    except OSError as e:
        raise Unreachable(f"websocket {ws_url}: {e}") from e
    with ws:
        if not ws.ping(b"check").wait(EVENT_TIMEOUT_SECONDS):
            raise CheckFailed("websocket: no pong within the timeout")
        drive_run(api, run_id)
        events = []
        while not events or events[-1]["type"] != "run_completed":
            try:
                events.append(json.loads(ws.recv(timeout=EVENT_TIMEOUT_SECONDS)))
            except TimeoutError as e:
                raise CheckFailed(f"websocket: stalled after {[x['type'] for x in events]}") from e
    seqs = [e["seq"] for e in events]
    types = [e["type"] for e in events]
    if any(b <= a for a, b in zip(seqs, seqs[1:])):
        raise CheckFailed(f"websocket: seqs out of order: {seqs}")
    if types != RUN_EVENT_TYPES:
        raise CheckFailed(f"websocket: types {types}, expected {RUN_EVENT_TYPES}")
    if any(e.get("run_id") != run_id for e in events):
        raise CheckFailed("websocket: an event of another run passed the filter")
    print(f"websocket: {len(events)} events in seq order {seqs[0]}..{seqs[-1]}, ping answered")


# AgentGate's broadcaster frames: their keys in the order it builds them.
AGENTGATE_FRAME_KEYS = {
    "iteration:started": ["type", "workOrderId", "runId", "iteration"],
    "iteration:completed": ["type", "workOrderId", "runId", "iteration", "success"],
    "phase:completed": ["type", "workOrderId", "runId", "phase", "durationMs"],
    "run:completed": ["type", "workOrderId", "runId", "result", "metrics"],
}
# Spacing, key order and number spellings that json.dumps would not reproduce.
AGENTGATE_METRICS = (
    '{"totalDurationMs": 42000, "iterationCount":1,"phaseBreakdown":{"verify":500,"build":1500.0},'
    '"agentMetrics":{"totalTokens":1e3,"totalCostUsd":0.10,"avgIterationMs":42000}}'
)


def check_agentgate_ws(api):
    from websockets.sync.client import connect

    tag = uuid.uuid4().hex[:8]
    ag_run, own_run = "ag-check-" + tag, "own-check-" + tag
    ws_url = "ws" + api.url[len("http"):] + "/ws"
    try:
        ws = connect(ws_url, additional_headers=api.headers(), open_timeout=IO_TIMEOUT_SECONDS)
    except OSError as e:
        raise Unreachable(f"websocket {ws_url}: {e}") from e
    with ws:
        if not ws.ping(b"check").wait(EVENT_TIMEOUT_SECONDS):
            raise CheckFailed("/ws: no pong within the timeout")
        run = f'"runId":"{ag_run}","workOrderId":"WO-ag-{tag}"'
        api.post_text("/api/v1/events", f"""[
            {{"type":"run_started",{run},"taskSpec":{{"goal":"check","maxIterations":1}}}},
            {{"type":"iteration_started",{run},"iteration":1,"maxIterations":1}},
            {{"type":"phase_started",{run},"iteration":1,"phase":"build"}},
            {{"type":"phase_completed",{run},"iteration":1,"phase":"build","success":true,"durationMs":1500}},
            {{"type":"gate_checked",{run},"iteration":1,"gate":"tests","passed":true}},
            {{"type":"iteration_completed",{run},"iteration":1,"success":true,"phaseTimings":{{"build":1500}}}},
            {{"type":"run_completed",{run},"result":"succeeded","iterations":1,"durationMs":42000,
              "metrics":{AGENTGATE_METRICS}}}]""", 200)
        drive_run(api, own_run)
        frames, ended = [], set()
        while ended != {ag_run, own_run}:
            try:
                text = ws.recv(timeout=EVENT_TIMEOUT_SECONDS)
            except TimeoutError as e:
                raise CheckFailed(f"/ws: stalled after {[f['type'] for _, f in frames]}") from e
            frame = json.loads(text)
            keys = AGENTGATE_FRAME_KEYS.get(frame.get("type"))
            if keys is None:
                raise CheckFailed(f"/ws: a frame AgentGate does not know: {text}")
            if list(frame) != keys:
                raise CheckFailed(f"/ws: keys {list(frame)}, expected exactly {keys}: {text}")
            if frame["runId"] in (ag_run, own_run):
                frames.append((text, frame))
                if frame["type"] == "run:completed":
                    ended.add(frame["runId"])
    by_run = {r: [f for _, f in frames if f["runId"] == r] for r in (ag_run, own_run)}
    expected = {
        ag_run: [
            {"type": "iteration:started", "workOrderId": f"WO-ag-{tag}", "runId": ag_run, "iteration": 1},
            {"type": "phase:completed", "workOrderId": f"WO-ag-{tag}", "runId": ag_run, "phase": "build",
             "durationMs": 1500},
            {"type": "iteration:completed", "workOrderId": f"WO-ag-{tag}", "runId": ag_run, "iteration": 1,
             "success": True},
            {"type": "run:completed", "workOrderId": f"WO-ag-{tag}", "runId": ag_run, "result": "succeeded",
             "metrics": json.loads(AGENTGATE_METRICS)},
        ],
        own_run: [
            {"type": "iteration:started", "workOrderId": "WO-check", "runId": own_run, "iteration": 1},
            {"type": "phase:completed", "workOrderId": "WO-check", "runId": own_run, "phase": "plan"},
            {"type": "iteration:completed", "workOrderId": "WO-check", "runId": own_run, "iteration": 1,
             "success": True},
            {"type": "run:completed", "workOrderId": "WO-check", "runId": own_run, "result": "succeeded",
             "metrics": None},
        ],
    }
    # The run API's phase had no duration sent: the server measured one.
    own_phase = by_run[own_run][1] if len(by_run[own_run]) > 1 else {}
    if not isinstance(own_phase.get("durationMs"), (int, float)):
        raise CheckFailed(f"/ws: the measured phase has no durationMs: {own_phase}")
    expected[own_run][1]["durationMs"] = own_phase["durationMs"]
    for run_id, want in expected.items():
        if by_run[run_id] != want:
            raise CheckFailed(f"/ws: frames of {run_id}: {by_run[run_id]}, expected {want}")
    done = next(t for t, f in frames if f["runId"] == ag_run and f["type"] == "run:completed")
    if not done.endswith(f',"metrics":{AGENTGATE_METRICS}}}'):
        raise CheckFailed(f"/ws: the metrics were not sent byte for byte: {done}")
    phase = next(t for t, f in frames if f["runId"] == ag_run and f["type"] == "phase:completed")
    if '"durationMs":1500}' not in phase:
        raise CheckFailed("/ws: durationMs is not printed as JavaScript prints it")
    status, raw = api.call("GET", f"/api/v1/runs/{ag_run}")
    if status != 200 or f'"metrics":{AGENTGATE_METRICS}' not in raw.decode():
        raise CheckFailed(f"GET /api/v1/runs/{ag_run}: the metrics as sent are missing: {raw[:500]!r}")
    print(
        f"/ws: {len(frames)} AgentGate frames for two runs (progress events and run API), exact keys"
        " in order, metrics byte for byte, in the run detail too; ping answered"
    )


def check_sse_latency(api, trials):
    stream = SseStream(api, "/api/v1/events")
    run_id = "sse-check-" + uuid.uuid4().hex[:8]
    samples, after_ack = [], []
    try:
        for i in range(trials):
            sent = time.perf_counter()
            api.post("/api/v1/messages", {"type": "latency", "body": {"i": i}, "run_id": run_id}, 201)
            acked = time.perf_counter()
            while True:
                kind, data = stream.next_event(EVENT_TIMEOUT_SECONDS)
                if kind == "message_appended" and data.get("run_id") == run_id and data["body"]["i"] == i:
                    break
            seen = time.perf_counter()
            samples.append((seen - sent) * 1e3)
            after_ack.append((seen - acked) * 1e3)
    finally:
        stream.close()
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    print(f"sse_latency_ms {statistics.median(samples):.2f} ms")
    print(
        f"sse latency over {trials} posts (POST sent to event read): median {statistics.median(samples):.2f} ms,"
        f" p95 {p95:.2f} ms, max {samples[-1]:.2f} ms; event read minus POST answer:"
        f" median {statistics.median(after_ack):.2f} ms"
    )
    if statistics.median(samples) >= 50:
        raise CheckFailed(f"sse: median latency {statistics.median(samples):.1f} ms is not under 50 ms")


def gauge(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    return 0.0


def check_many_subscribers(api, n):
    status, raw = api.call("GET", "/metrics")
    before = gauge(raw.decode(), 'conductor_event_subscribers{transport="sse"}')
    streams = []
    try:
        started = time.perf_counter()
        for _ in range(n):
            streams.append(SseStream(api, "/api/v1/events"))
        opened = time.perf_counter() - started
        times = []
        text = ""
        for _ in range(20):
            t = time.perf_counter()
            status, raw = api.call("GET", "/metrics")
            times.append((time.perf_counter() - t) * 1e3)
            text = raw.decode()
            if status != 200:
                raise CheckFailed(f"/metrics: status {status} with {n} subscribers")
        count = gauge(text, 'conductor_event_subscribers{transport="sse"}')
        # At least our n: a stream an earlier check closed may still have
        # been counted in `before`, and leave while these are open.
        if count < n:
            raise CheckFailed(f"subscriber gauge is {count} with {n} streams open (before: {before})")
        times.sort()
        print(
            f"metrics_ms_with_{n}_subscribers median {statistics.median(times):.2f} ms,"
            f" max {times[-1]:.2f} ms (streams opened in {opened:.2f} s, gauge {count:.0f})"
        )
    finally:
        for s in streams:
            s.close()


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    installer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "install-tools.sh")
    subprocess.run(["bash", installer, "chromium"], check=True)
    path = shutil.which("chromium")
    if not path:
        raise CheckFailed("chromium is not installed and could not be installed")
    return path


class Browser:
    """Headless Chromium driven over the DevTools protocol.

    `--dump-dom` prints the DOM at the load event, before the page's first fetches have
    answered, and `--virtual-time-budget` never runs out while an EventSource is open
    (virtual time waits for pending fetches). So the page is loaded in a live browser and
    its DOM read with Runtime.evaluate until it shows what is expected.
    """

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="check-streams-chromium-")
        self.proc = subprocess.Popen(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--user-data-dir=" + self.profile, "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ws = None
        self.debugger_url = None
        self.next_id = 0
        try:
            self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self):
        active = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + BROWSER_TIMEOUT_SECONDS
        while not (os.path.exists(active) and open(active).read().count("\n") >= 1):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise CheckFailed("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(open(active).read().split("\n")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=IO_TIMEOUT_SECONDS) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if not pages:
            raise CheckFailed("chromium has no page target")
        self.debugger_url = pages[0]["webSocketDebuggerUrl"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=BROWSER_TIMEOUT_SECONDS))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise CheckFailed(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression, what, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if self.evaluate(expression):
                return
            if time.monotonic() > deadline:
                raise CheckFailed(f"the page did not show {what} within {timeout}s")
            time.sleep(0.01)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(IO_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def check_page(api):
    from websockets.sync.client import connect

    chromium = find_chromium()
    run_id = "page-check-" + uuid.uuid4().hex[:8]
    api.post("/api/v1/runs", {"run_id": run_id, "agent": "check-page"}, 201)
    api.post(f"/api/v1/runs/{run_id}/events", {"type": "phase_started", "phase": "review"}, 200)
    page = api.url + "/" + ("#key=" + urllib.parse.quote(api.key) if api.key else "")
    row = f'document.querySelector(\'#runs tr[data-run-id="{run_id}"]\')'
    completed = False
    try:
        with Browser(chromium) as browser, connect(
            browser.debugger_url, max_size=None, open_timeout=IO_TIMEOUT_SECONDS
        ) as ws:
            browser.ws = ws
            started = time.perf_counter()
            browser.call("Page.navigate", url=page)
            browser.wait_for(f"{row} !== null && {row}.textContent.includes('review')",
                             f"run {run_id} in phase review", EVENT_TIMEOUT_SECONDS * 2)
            browser.wait_for("document.getElementById('conn').textContent === 'live'",
                             "a live event stream", EVENT_TIMEOUT_SECONDS * 2)
            shown = time.perf_counter() - started
            # Changes now reach the page only through the stream.
            posted = time.perf_counter()
            api.post(f"/api/v1/runs/{run_id}/events", {"type": "phase_started", "phase": "deploy"}, 200)
            browser.wait_for(f"{row} !== null && {row}.textContent.includes('deploy')",
                             "the phase change pushed over SSE", EVENT_TIMEOUT_SECONDS)
            pushed = (time.perf_counter() - posted) * 1e3
            # An event from a simulated clock: the time column shows when the
            # server received it (one clock, in seq order), the event's own
            # time is in the tooltip, and its duration reads as people say it.
            old = "2020-01-01T00:00:00Z"
            api.post(f"/api/v1/runs/{run_id}/events",
                     {"type": "phase_completed", "phase": "deploy", "success": True,
                      "durationMs": 80000, "timestamp": old}, 200)
            cell = ("[...document.querySelectorAll('#events tr')].find(tr =>"
                    f" tr.textContent.includes('phase_completed') && tr.textContent.includes('{run_id}'))")
            browser.wait_for(f"{cell} !== undefined", "the simulated-clock event", EVENT_TIMEOUT_SECONDS)
            shown_row = browser.evaluate(
                f"(() => {{ const tr = {cell}; const t = tr.children[1];"
                f" return [t.textContent, t.title, tr.textContent,"
                f" new Date('{old}').toLocaleTimeString()]; }})()")
            text, title, row_text, old_text = shown_row
            if "2020" not in title or text == old_text:
                raise CheckFailed(f"the time column shows the event's own time: {shown_row}")
            if "duration_ms=1 m 20 s" not in row_text:
                raise CheckFailed(f"the duration is not rounded for people: {row_text!r}")
            seqs = browser.evaluate(
                "[...document.querySelectorAll('#events tr')].map(tr => Number(tr.children[0].textContent))")
            if any(a <= b for a, b in zip(seqs, seqs[1:])):
                raise CheckFailed(f"the events are not in seq order: {seqs}")
            # A cost of six decimals shows three; a duration given in both
            # milliseconds and seconds shows once.
            api.post(f"/api/v1/runs/{run_id}/complete", {"cost": 0.123457}, 200)
            completed = True
            browser.wait_for(f"{row} === null", "the run leaving the active list", EVENT_TIMEOUT_SECONDS)
            ended = ("[...document.querySelectorAll('#events tr')].find(tr => tr.textContent.includes('run_completed')"
                     f" && tr.textContent.includes('{run_id}'))")
            browser.wait_for(f"{ended} !== undefined", "run_completed in the last events", EVENT_TIMEOUT_SECONDS)
            ended_text = browser.evaluate(f"{ended}.textContent")
            if ("duration_ms=" not in ended_text or "duration_seconds=" in ended_text
                    or '"cost":0.123,' not in ended_text or re.search(r"\d\.\d{4,}", ended_text)):
                raise CheckFailed(f"run_completed is not shown rounded, each value once: {ended_text!r}")
            budget = browser.evaluate("document.getElementById('budget-note').textContent")
            dom = browser.evaluate("document.documentElement.outerHTML")
    finally:
        if not completed:
            api.call("POST", f"/api/v1/runs/{run_id}/complete", {})
    if "<html" not in (dom or ""):
        raise CheckFailed("could not read the page's DOM")
    print(
        f"page: headless chromium showed run {run_id} {shown:.2f} s after loading, took a phase"
        f" change over SSE within {pushed:.0f} ms (DOM polled every 10 ms over DevTools),"
        f" kept seq order with the server's receive time, rounded durations for people,"
        f" dropped the run on completion; budget: {budget!r}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("CONDUCTOR_API_KEY"))
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium page check")
    args = parser.parse_args()
    api = Api(args.url, args.api_key)
    checks = [
        ("websocket", lambda: check_websocket(api)),
        ("agentgate websocket", lambda: check_agentgate_ws(api)),
        ("sse latency", lambda: check_sse_latency(api, args.trials)),
        ("many subscribers", lambda: check_many_subscribers(api, args.subscribers)),
    ]
    if not args.no_browser:
        checks.append(("live page", lambda: check_page(api)))
    failed = 0
    for name, check in checks:
        try:
            check()
        except Unreachable as e:
            print(f"FAIL {name}: server unreachable: {e}", file=sys.stderr)
            return 2
        except CheckFailed as e:
            print(f"FAIL {name}: {e}", file=sys.stderr)
            failed += 1
        except Exception as e:  # a client library or subprocess error fails this check only
            print(f"FAIL {name}: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    print("all stream checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
