#!/usr/bin/env python3
"""Clients for scripts/check_slow_readers.sh: fill a server, hold slow readers on it, and time
one fast scrape, while watching the server's private memory (RssAnon in /proc/PID/status).

Standard library only; loopback only; every step is bounded in time.

  fill-metrics URL BYTES       run events with new phase names until GET /metrics is BYTES long
  fill-messages URL N SIZE     N messages whose bodies are strings of SIZE bytes
  hold URL PATH PID NAME       16 slow readers (4 KiB receive buffer, 4 KiB read every 5 s) of
                               PATH for 20 s; prints `NAME <RssAnon growth> MiB`
  scrape URL PID               one scrape of /metrics read as fast as it comes; prints
                               `scrape_extra_over_answer <RssAnon peak growth / answer size> ratio`
"""

import http.client
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

READERS = 16
READ_BYTES = 4096
READ_EVERY = 5.0
HOLD_SECONDS = 20.0
# Phase names per run, sent in batches of at most 1000 events (3 per phase).
PHASES_PER_RUN = 1000
PHASES_PER_BATCH = 250
# The series cap of a family: past it, new phases all go to one overflow series.
MAX_PHASES = 10_000


def address(url):
    parts = urlsplit(url)
    return parts.hostname, parts.port


def rss_anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise SystemExit(f"no RssAnon for pid {pid}")


def connection(url):
    host, port = address(url)
    return http.client.HTTPConnection(host, port, timeout=60)


def call(conn, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if not 200 <= r.status < 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return r, data


def metrics_length(conn):
    r, _ = call(conn, "HEAD", "/metrics")
    return int(r.getheader("Content-Length"))


def fill_metrics(url, want):
    """Adds runs of PHASES_PER_RUN new phases each, every phase timed, counted and given
    tokens, so that the built-in phase families grow, until /metrics is `want` bytes long."""
    conn = connection(url)
    length = metrics_length(conn)
    run = 0
    while length < want:
        if (run + 1) * PHASES_PER_RUN > MAX_PHASES:
            raise SystemExit(f"/metrics is {length} bytes with {MAX_PHASES} phases, under {want}")
        run_id = f"slow-readers-{run}"
        call(conn, "POST", "/api/v1/runs", json.dumps({"run_id": run_id}))
        for first in range(0, PHASES_PER_RUN, PHASES_PER_BATCH):
            events = []
            for i in range(first, first + PHASES_PER_BATCH):
                phase = f"phase-{run * PHASES_PER_RUN + i:05d}-of-a-long-research-cycle"
                events += [
                    {"type": "phase_started", "phase": phase},
                    {"type": "phase_completed", "phase": phase, "success": i % 4 != 0,
                     "duration_ms": 1500 + i},
                    {"type": "tokens", "phase": phase, "model": "m", "input_tokens": 100 + i,
                     "output_tokens": 20},
                ]
            call(conn, "POST", f"/api/v1/runs/{run_id}/events", json.dumps(events))
        run += 1
        length = metrics_length(conn)
    print(f"metrics_bytes {length} bytes", file=sys.stderr)


def fill_messages(url, count, size):
    """Appends `count` messages from 8 keep-alive connections at once."""
    body = json.dumps({"type": "bulk", "body": "m" * size})
    left = list(range(count))
    lock = threading.Lock()
    failures = []

    def worker():
        conn = connection(url)
        while True:
            with lock:
                if not left or failures:
                    return
                left.pop()
            try:
                call(conn, "POST", "/api/v1/messages", body)
            except BaseException as e:  # SystemExit from call() included
                failures.append(e)
                return

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"appending messages failed: {failures[0]}")


class Sampler:
    """The peak of RssAnon, read every `every` seconds on a thread of its own."""

    def __init__(self, pid, every):
        self.pid, self.every = pid, every
        self.peak = rss_anon_kib(pid)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_anon_kib(self.pid))
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_anon_kib(self.pid))


class SlowReader:
    """A client that asks for `path` and then reads 4 KiB every 5 s through a 4 KiB receive
    buffer, as a client on a slow link would."""

    def __init__(self, url, path, stop):
        host, port = address(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting, so the window it offers is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BYTES)
        self.sock.settimeout(30)
        self.sock.connect((host, port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.stop, self.received, self.closed = stop, 0, False
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.sock.recv(READ_BYTES)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.received += len(data)
            self.stop.wait(READ_EVERY)

    def close(self):
        self.thread.join()
        self.sock.close()


def hold(url, path, pid, name):
    before = rss_anon_kib(pid)
    stop = threading.Event()
    with Sampler(pid, 0.25) as sampler:
        readers = [SlowReader(url, path, stop) for _ in range(READERS)]
        time.sleep(HOLD_SECONDS)  # the measurement window, not a wait for an event
        stop.set()
    for r in readers:
        r.close()
    held = [r for r in readers if r.received > 0 and not r.closed]
    if len(held) != READERS:
        raise SystemExit(f"{name}: only {len(held)} of {READERS} readers were held throughout")
    total = sum(r.received for r in readers)
    print(f"{name}: {READERS} readers took {total} bytes in {HOLD_SECONDS:.0f} s; RssAnon "
          f"{before} KiB before, {sampler.peak} KiB at most", file=sys.stderr)
    print(f"{name} {(sampler.peak - before) / 1024:.2f} MiB")


def read_chunked_body(f):
    """The length of a chunked (or Content-Length) body read from file `f`, after the head."""
    head = {}
    status = f.readline().decode()
    if not status.startswith("HTTP/1.1 200"):
        raise SystemExit(f"scrape: {status.strip()}")
    while (line := f.readline()) not in (b"\r\n", b""):
        k, v = line.decode().split(":", 1)
        head[k.strip().lower()] = v.strip()
    if "content-length" in head:
        n = int(head["content-length"])
        got = len(f.read(n))
        if got != n:
            raise SystemExit("scrape: the body ended early")
        return n
    if head.get("transfer-encoding") != "chunked":
        raise SystemExit(f"scrape: no framing in {head}")
    total = 0
    while True:
        size = int(f.readline().split(b";")[0], 16)
        if size == 0:
            f.readline()
            return total
        data = f.read(size + 2)
        if len(data) != size + 2:
            raise SystemExit("scrape: a chunk ended early")
        total += size


def one_scrape(url, pid):
    """RssAnon before, its peak during one fast scrape, and the answer's length."""
    host, port = address(url)
    before = rss_anon_kib(pid)
    with Sampler(pid, 0.002) as sampler:
        with socket.create_connection((host, port), timeout=60) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            length = read_chunked_body(s.makefile("rb"))
    return before, sampler.peak, length


def scrape(url, pid):
    # A scrape makes, once, what the registry keeps for later ones (each counter and gauge
    # series' `name{labels} ` prefix); the HEAD requests of fill-metrics made it already, and a
    # first scrape here makes sure of it. The second one is the figure.
    before, peak, length = one_scrape(url, pid)
    print(f"first scrape: {length} bytes; RssAnon {before} KiB before, {peak} KiB at most",
          file=sys.stderr)
    before, peak, length = one_scrape(url, pid)
    print(f"scrape: {length} bytes; RssAnon {before} KiB before, {peak} KiB at most",
          file=sys.stderr)
    print(f"scrape_extra_over_answer {(peak - before) * 1024 / length:.4f} ratio")


def main(argv):
    match argv:
        case ["fill-metrics", url, want]:
            fill_metrics(url, int(want))
        case ["fill-messages", url, count, size]:
            fill_messages(url, int(count), int(size))
        case ["hold", url, path, pid, name]:
            hold(url, path, int(pid), name)
        case ["scrape", url, pid]:
            scrape(url, int(pid))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
