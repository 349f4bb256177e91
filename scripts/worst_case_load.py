"""Drives a conductor-metrics server with the worst shapes of run and message
the data lifecycle issue names, until each in-memory cap is reached, and
exits non-zero on any answer other than the expected one.

Usage: worst_case_load.py BASE_URL RUN_CAP_BYTES MESSAGE_CAP_BYTES

- 32 running runs (what the default daily budget admits, $5.00 at $0.15 a
  run), each with 250 distinct 64-character phase, gate and model names and
  2,048-byte gate reasons: a running run keeps its whole detail;
- 200 runs of that shape that end, each leaving a summary;
- finished runs with 128 KiB of start texts, until one and a half times the
  finished-run byte cap has ended (the bound by bytes, not by count);
- 64 KiB message bodies, until one and a half times the message byte cap.

Only loopback is addressed; every request has a deadline.
"""

import http.client
import json
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

BASE, RUN_CAP, MESSAGE_CAP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
HOST = urllib.parse.urlparse(BASE).netloc
RUNNING, HEAVY_FINISHED, WORKERS = 32, 200, 4


def name(kind, i, run):
    return f"{kind}-{run % 1000:03d}-{i:0>54}"[:64]


def heavy_events(run):
    events = []
    for i in range(250):
        phase = name("phase", i, run)
        events += [
            {"type": "phase_started", "phase": phase},
            {"type": "tokens", "phase": phase, "model": name("model", i, run),
             "input_tokens": 10 + i, "output_tokens": 1},
            {"type": "gate_checked", "gate": name("gate", i, run), "passed": i % 2 == 0,
             "reason": "r" * 2048},
            {"type": "phase_completed", "phase": phase, "success": True},
        ]
    return json.dumps(events)


class Client:
    def __init__(self):
        self.conn = http.client.HTTPConnection(HOST, timeout=60)

    def post(self, path, body, want):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        self.conn.request("POST", path, data, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        text = r.read()
        if r.status != want:
            sys.exit(f"POST {path}: {r.status} {text[:300]!r}, wanted {want}")


def heavy_run(job):
    run, finish = job
    c = Client()
    rid = f"heavy-{run}"
    c.post("/api/v1/runs", {"run_id": rid, "agent": "worst-case"}, 201)
    c.post(f"/api/v1/runs/{rid}/events", heavy_events(run), 200)
    if finish:
        c.post(f"/api/v1/runs/{rid}/complete", {}, 200)


def big_runs(worker):
    c = Client()
    # The most a run's free text may be (MAX_TEXT_BYTES, one limit on every route).
    text = "g" * 2048
    done, per_run = 0, 4 * len(text)
    while done * per_run * WORKERS < RUN_CAP * 3 // 2:
        rid = f"big-{worker}-{done}"
        c.post("/api/v1/runs", {"run_id": rid, "goal": text, "strategy": text,
                                "agent": text, "work_order_id": text}, 201)
        c.post(f"/api/v1/runs/{rid}/cancel", {}, 200)
        done += 1


def messages(worker):
    c = Client()
    body = json.dumps({"type": "worst-case", "body": "m" * (64 * 1024 - 64)})
    sent = 0
    while sent * len(body) * WORKERS < MESSAGE_CAP * 3 // 2:
        c.post("/api/v1/messages", body, 201)
        sent += 1


with ThreadPoolExecutor(WORKERS) as pool:
    jobs = [(r, False) for r in range(RUNNING)]
    jobs += [(RUNNING + r, True) for r in range(HEAVY_FINISHED)]
    list(pool.map(heavy_run, jobs))
    list(pool.map(big_runs, range(WORKERS)))
    list(pool.map(messages, range(WORKERS)))
print("worst case load done")
