#!/usr/bin/env python3
"""Hostile and measuring clients for scripts/chaos.sh, one scenario per run.

Usage: chaos_clients.py SCENARIO --url http://127.0.0.1:PORT [--pid PID] [options]

Each scenario talks to one running server over loopback, prints its figures
as `name value` lines on stdout, and exits 1 with a message on stderr when a
check fails. Every socket has a timeout and every loop a deadline, so a
wedged server fails a scenario instead of hanging it.

Scenarios:
  idle         N idle keep-alive and M slowloris connections, then /metrics
               latency from new clients and the server's RSS
  timeouts     idle and header timeouts close connections and are counted
  cap          past --max-connections the oldest idle connection is closed
  headers      request heads over 16 KiB are refused, memory stays flat
  bodies       absurd, huge, endless and truncated bodies from 50 clients at
               once, with /metrics latency measured meanwhile
  emfile       connections until the server is out of descriptors, then the
               time until it serves again once they close
  badreq       smuggling-shaped and malformed requests
  cardinality  random methods, paths and label-shaped values; the series
               count in /metrics, sampled throughout
  scrape       /metrics latency while something else loads the server
  ssestorm     clients that open an SSE stream, read its first bytes and
               close it, as fast as they can, with /healthz polled meanwhile:
               the server's descriptors and threads, and how soon they are
               given back
  lagged       SSE subscribers that never read, under a flood of appends:
               how soon they are cut off and their threads freed
  holdsse      opens --count SSE streams that never read, until killed
  ssedelay     the delay from sending an append to its event arriving on an
               SSE stream (the append's durable write included)
"""

import argparse
import json
import os
import random
import resource
import socket
import sys
import threading
import time
import urllib.parse

IO_TIMEOUT = 10.0


def fail(message):
    print(f"chaos_clients: {message}", file=sys.stderr)
    sys.exit(1)


def figure(name, value):
    print(f"{name} {value}", flush=True)


def raise_nofile():
    """Lifts this process's descriptor limit to its hard limit: the client
    side of 2,000 connections needs as many descriptors as the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect(addr, timeout=IO_TIMEOUT):
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Buffered reads of HTTP/1.1 responses from one socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("response line too long")
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, head=False):
        """One response: (status, headers dict with lower-case names, body).
        Interim 1xx responses are skipped."""
        while True:
            status_line = self.line()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ValueError(f"bad status line {status_line!r}")
            status = int(parts[1])
            headers = {}
            while True:
                line = self.line()
                if not line:
                    break
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            if 100 <= status < 200 and status != 101:
                continue
            break
        if head or status in (101, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line():
                        pass
                    return status, headers, body
                body += self.exact(size)
                self.exact(2)
        if "content-length" in headers:
            return status, headers, self.exact(int(headers["content-length"]))
        body = self.buf
        self.buf = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return status, headers, body
            body += data


def parse_url(url):
    u = urllib.parse.urlsplit(url)
    return (u.hostname, u.port)


def get(addr, path, timeout=IO_TIMEOUT, headers=""):
    """GET on a new connection: (status, body, seconds from connect to the
    last body byte)."""
    start = time.perf_counter()
    s = connect(addr, timeout)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n{headers}\r\n".encode())
        status, _, body = Reader(s).response()
    finally:
        s.close()
    return status, body, time.perf_counter() - start


def scrape(addr):
    """The samples of /metrics as {series: value}."""
    status, body, _ = get(addr, "/metrics")
    if status != 200:
        fail(f"/metrics answered {status}")
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def counter(samples, series):
    return samples.get(series, 0.0)


def rejected(samples, reason):
    return counter(samples, f'conductor_http_connections_rejected_total{{reason="{reason}"}}')


def requests_total(samples):
    return sum(v for k, v in samples.items() if k.startswith("conductor_api_requests_total{"))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    fail(f"no VmRSS for pid {pid}")


def percentile(values, p):
    ordered = sorted(values)
    index = max(0, -(-len(ordered) * p // 100) - 1)
    return ordered[int(index)]


def wait_for(what, deadline_s, check, pause=0.05):
    deadline = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            fail(f"{what}: not within {deadline_s} s")
        time.sleep(pause)


def is_closed(sock, within):
    """Whether the peer closes `sock` (EOF or reset) within `within` seconds
    without sending anything."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def keep_alive_get(addr, path="/healthz"):
    """A connection that made one request and is now idle."""
    s = connect(addr)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: chaos\r\n\r\n".encode())
    status, _, _ = Reader(s).response()
    if status != 200:
        fail(f"GET {path} answered {status}")
    return s


def latency_samples(addr, count, path="/metrics", pause=0.005, stop=None):
    """`count` GETs of `path`, each on a new connection, in milliseconds."""
    times = []
    for _ in range(count):
        if stop is not None and stop.is_set():
            break
        status, _, seconds = get(addr, path)
        if status != 200:
            fail(f"GET {path} answered {status} under load")
        times.append(seconds * 1000.0)
        time.sleep(pause)
    return times


class Trickle(threading.Thread):
    """Sends one more header byte to each slowloris socket every `interval`."""

    def __init__(self, socks, interval):
        super().__init__(daemon=True)
        self.socks = socks
        self.interval = interval
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(self.interval):
            for s in self.socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass


def scenario_idle(args, addr):
    raise_nofile()
    idle = [keep_alive_get(addr) for _ in range(args.idle)]
    slow = []
    for _ in range(args.slow):
        s = connect(addr)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: chaos\r\nX-Slow: ")
        slow.append(s)
    slow_started = time.monotonic()
    trickle = Trickle(slow, args.interval)
    trickle.start()
    want = args.idle + args.slow
    wait_for(
        f"{want} open connections",
        10,
        lambda: scrape(addr).get("conductor_http_connections", 0) >= want,
    )
    rss = [rss_mib(args.pid)]
    times = []
    # Rounds of samples with RSS read between them, all inside the header
    # timeout of the slowloris connections.
    for _ in range(args.rounds):
        round_times = latency_samples(addr, args.samples // args.rounds)
        figure("idle_round_p99_ms", f"{percentile(round_times, 99):.2f}")
        times += round_times
        rss.append(rss_mib(args.pid))
    open_now = scrape(addr).get("conductor_http_connections", 0)
    if open_now < want:
        fail(f"only {open_now:.0f} of {want} connections still open after the samples")
    trickle.stop.set()
    figure("idle_metrics_p50_ms", f"{percentile(times, 50):.2f}")
    figure("idle_metrics_p99_ms", f"{percentile(times, 99):.2f}")
    figure("idle_metrics_max_ms", f"{max(times):.2f}")
    figure("idle_rss_mib", f"{max(rss):.1f}")
    figure("idle_slowloris_seconds", f"{time.monotonic() - slow_started:.1f}")
    if args.expect_header_timeout:
        # The slowloris connections are still sending headers: the header
        # timeout closes every one of them.
        trickle = Trickle(slow, args.interval)
        trickle.start()
        wait_for(
            "slowloris closed by the header timeout",
            args.expect_header_timeout,
            lambda: rejected(scrape(addr), "header_timeout") >= args.slow,
            pause=0.5,
        )
        trickle.stop.set()
        closed = sum(is_closed(s, 0.01) for s in slow)
        figure("slowloris_closed", closed)
        if closed != args.slow:
            fail(f"{args.slow - closed} slowloris connections still open")
        open_idle = sum(not is_closed(s, 0.001) for s in idle)
        figure("idle_still_open", open_idle)
    for s in idle + slow:
        s.close()


def scenario_scrape(args, addr):
    """Samples /metrics on new connections for `--seconds`, while the caller
    loads the server from elsewhere."""
    deadline = time.monotonic() + args.seconds
    times = []
    while time.monotonic() < deadline:
        status, _, seconds = get(addr, "/metrics")
        if status != 200:
            fail(f"/metrics answered {status} under load")
        times.append(seconds * 1000.0)
        time.sleep(args.pause)
    figure("scrapes", len(times))
    figure("scrape_p50_ms", f"{percentile(times, 50):.2f}")
    figure("scrape_p99_ms", f"{percentile(times, 99):.2f}")
    figure("scrape_max_ms", f"{max(times):.2f}")


def scenario_timeouts(args, addr):
    """Run against a server with short idle and header timeouts (about 1 s):
    idle keep-alive connections, silent half-sent heads and a slowloris that
    keeps sending are all closed, and each closing is counted once."""
    before = scrape(addr)
    idle = [keep_alive_get(addr) for _ in range(args.count)]
    silent = []
    for _ in range(args.count):
        s = connect(addr)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: chaos\r\n")
        silent.append(s)
    trickling = []
    for _ in range(args.count):
        s = connect(addr)
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        trickling.append(s)
    trickle = Trickle(trickling, 0.1)
    trickle.start()
    started = time.monotonic()
    for name, socks in (("idle", idle), ("silent", silent), ("trickling", trickling)):
        closed = sum(is_closed(s, max(0.01, args.within - (time.monotonic() - started))) for s in socks)
        figure(f"timeouts_{name}_closed", closed)
        if closed != len(socks):
            fail(f"{len(socks) - closed} {name} connections outlived the timeouts")
    figure("timeouts_closed_within_s", f"{time.monotonic() - started:.2f}")
    trickle.stop.set()
    after = scrape(addr)
    for reason, want in (("idle_timeout", args.count), ("header_timeout", 2 * args.count)):
        got = rejected(after, reason) - rejected(before, reason)
        figure(f"timeouts_{reason}", f"{got:.0f}")
        if got != want:
            fail(f"{reason} counted {got:.0f} times, not {want}")
    for s in idle + silent + trickling:
        s.close()


def scenario_cap(args, addr):
    """Run against a server with --max-connections N: N+K idle connections
    leave the N newest open and close the K oldest, counted as evicted; a
    cap full of busy connections refuses the new one, counted as limit."""
    before = scrape(addr)
    cap = args.count
    extra = 5
    socks = [keep_alive_get(addr) for _ in range(cap + extra)]
    closed = [is_closed(s, 0.5) for s in socks[:extra]]
    figure("cap_oldest_closed", sum(closed))
    if not all(closed):
        fail("the oldest idle connections were not the ones closed")
    for s in socks[extra:]:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: chaos\r\n\r\n")
        status, _, _ = Reader(s).response()
        if status != 200:
            fail(f"a surviving connection got {status}")
    after = scrape(addr)
    evicted = rejected(after, "evicted") - rejected(before, "evicted")
    # The scrapes themselves also evicted one idle connection each.
    figure("cap_evicted", f"{evicted:.0f}")
    if evicted < extra:
        fail(f"only {evicted:.0f} evictions counted")
    for s in socks:
        s.close()
    # Now fill the cap with connections busy sending their heads.
    busy = []
    for _ in range(cap):
        s = connect(addr)
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        busy.append(s)
    # Give the server a moment to read the first bytes, which is what makes
    # a connection busy rather than idle (and so not evictable).
    time.sleep(0.5)
    if any(is_closed(s, 0.001) for s in busy):
        fail("a connection sending its head was closed")
    refused = connect(addr)
    refused_closed = is_closed(refused, 2.0)
    figure("cap_busy_refused", int(refused_closed))
    if not refused_closed:
        fail("a new connection was not refused while the cap was full of busy ones")
    for s in busy:
        s.close()
    def healthy():
        # Until the server has seen the busy ones go, a new one may still be refused.
        try:
            return get(addr, "/healthz")[0] == 200
        except (OSError, EOFError):
            return False

    wait_for("/healthz after the busy connections left", 5, healthy)
    limit = rejected(scrape(addr), "limit") - rejected(before, "limit")
    figure("cap_limit", f"{limit:.0f}")
    if limit < 1:
        fail("the refusal was not counted as limit")


def send_head(addr, head, timeout=5.0):
    """Sends `head` on a new connection and returns (status or None, seconds,
    whether the server closed the connection afterwards)."""
    start = time.perf_counter()
    s = connect(addr, timeout)
    status = None
    try:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status, _, _ = Reader(s).response()
        except (EOFError, ConnectionResetError):
            pass
        closed = is_closed(s, timeout)
    finally:
        s.close()
    return status, time.perf_counter() - start, closed


def scenario_headers(args, addr):
    """Request heads over 16 KiB are refused with 431 or closed, whatever
    their shape, and the server's memory stays flat over many of them."""
    shapes = {
        "one_big_value": b"GET /healthz HTTP/1.1\r\nX-Big: " + b"v" * (17 * 1024) + b"\r\n\r\n",
        "many_fields": b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(200)) + b"\r\n",
        "long_target": b"GET /" + b"a" * (20 * 1024) + b" HTTP/1.1\r\n\r\n",
        "megabyte": b"GET /healthz HTTP/1.1\r\nX-Big: " + b"v" * (1024 * 1024) + b"\r\n\r\n",
        "endless_no_crlf": b"GET /healthz HTTP/1.1\r\nX-Big: " + b"v" * (64 * 1024),
    }
    for name, head in shapes.items():
        status, seconds, closed = send_head(addr, head)
        figure(f"headers_{name}", status if status is not None else "closed")
        if status not in (431, None) or not closed:
            fail(f"{name}: answered {status}, closed {closed}")
    def burst(n):
        threads = [threading.Thread(target=send_head, args=(addr, shapes["megabyte"])) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # Warm up (thread stacks, allocator arenas), then the same again: RSS
    # must not grow with the number of big heads.
    burst(args.count)
    wait_for("warm-up connections closed", 10, lambda: scrape(addr).get("conductor_http_connections", 99) <= 1)
    base = rss_mib(args.pid)
    for _ in range(args.rounds):
        burst(args.count)
    wait_for("connections closed", 10, lambda: scrape(addr).get("conductor_http_connections", 99) <= 1)
    grown = rss_mib(args.pid) - base
    figure("headers_rss_growth_mib", f"{grown:.1f}")
    if grown > args.max_growth:
        fail(f"RSS grew {grown:.1f} MiB over {args.rounds * args.count} big heads")
    if get(addr, "/healthz")[0] != 200:
        fail("/healthz failed after the big heads")


class Hostile(threading.Thread):
    """One client with a body that misbehaves; keeps its socket open until
    `stop` is set, so the server must not wait on it with a worker."""

    def __init__(self, addr, kind, stop):
        super().__init__(daemon=True)
        self.addr = addr
        self.kind = kind
        self.stop = stop
        self.sent = threading.Event()
        self.status = None
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the scenario
            self.error = repr(e)
        finally:
            self.sent.set()

    def _run(self):
        s = connect(self.addr, 30)
        head = b"POST /api/v1/messages HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\n"
        if self.kind in ("absurd_length", "giant_length", "huge_length"):
            length = {
                "absurd_length": b"18446744073709551615",
                "giant_length": b"9" * 400,
                "huge_length": b"1073741824",
            }[self.kind]
            s.sendall(head + b"Content-Length: " + length + b"\r\n\r\n{\"type\":\"t\"")
            self.sent.set()
            self.status = Reader(s).response()[0]
        elif self.kind == "truncated_length":
            s.sendall(head + b"Content-Length: 500000\r\n\r\n" + b"x" * 1000)
        elif self.kind == "truncated_chunk":
            s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 10)
        elif self.kind == "endless_chunks":
            s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
            self.sent.set()
            while not self.stop.wait(0.2):
                try:
                    s.sendall(b"1\r\nx\r\n")
                except OSError:
                    break
        self.sent.set()
        self.stop.wait()
        s.close()


def scenario_bodies(args, addr):
    """Fifty clients at once with absurd, huge, truncated and endless bodies:
    every worker stays free, so /metrics answers meanwhile, and the server
    survives the absurd lengths."""
    kinds = ["absurd_length", "giant_length", "huge_length", "truncated_length",
             "truncated_chunk", "endless_chunks"]
    stop = threading.Event()
    clients = [Hostile(addr, kinds[i % len(kinds)], stop) for i in range(args.count)]
    for c in clients:
        c.start()
    for c in clients:
        if not c.sent.wait(10):
            fail(f"a {c.kind} client could not send within 10 s")
    times = latency_samples(addr, args.samples)
    message = b'{"type":"chaos","body":"still writing"}'
    s = connect(addr)
    s.sendall(b"POST /api/v1/messages HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message))
    write_status = Reader(s).response()[0]
    s.close()
    stop.set()
    for c in clients:
        c.join(10)
    errors = [c.error for c in clients if c.error]
    figure("bodies_metrics_p99_ms", f"{percentile(times, 99):.2f}")
    figure("bodies_write_status", write_status)
    if write_status != 201:
        fail(f"a normal write got {write_status} beside the hostile bodies")
    absurd = [c for c in clients if c.kind in ("absurd_length", "giant_length", "huge_length")]
    refused = sum(c.status == 413 for c in absurd)
    figure("bodies_length_413", f"{refused}/{len(absurd)}")
    alive = args.pid is None or os.path.exists(f"/proc/{args.pid}")
    healthy = alive and get(addr, "/healthz")[0] == 200
    survived = int(healthy and refused == len(absurd) and not errors)
    figure("absurd_length_survived", survived)
    if errors:
        fail(f"hostile clients failed: {errors[:3]}")
    if not survived:
        fail(f"absurd lengths: {refused}/{len(absurd)} got 413, server healthy: {healthy}")


def stress_client(addr, stop, outcomes, lock):
    """Requests on a keep-alive connection until `stop`, reconnecting when
    the server closes it; tallies each outcome."""
    s = None
    while not stop.is_set():
        try:
            if s is None:
                s = connect(addr, 2.0)
                reader = Reader(s)
            s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: chaos\r\n\r\n")
            status, headers, _ = reader.response()
            outcome = str(status)
            if headers.get("connection", "").lower() == "close":
                s.close()
                s = None
        except (OSError, EOFError) as e:
            outcome = type(e).__name__
            if s is not None:
                s.close()
            s = None
        with lock:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if s is not None:
        s.close()


def scenario_emfile(args, addr):
    """Lowers the running server's descriptor limit, opens connections until
    it is out of descriptors, then closes them and times how long the server
    takes to answer again."""
    raise_nofile()
    before = scrape(addr)
    resource.prlimit(args.pid, resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
    held = []
    stuck = None
    for _ in range(args.nofile * 2):
        s = connect(addr)
        try:
            s.settimeout(1.0)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: chaos\r\n\r\n")
            status = Reader(s).response()[0]
        except (socket.timeout, EOFError, ConnectionResetError):
            status = None
        held.append(s)
        if status != 200:
            stuck = status
            break
    figure("emfile_connections_served", len(held) - 1)
    if stuck is not None:
        fail(f"at the descriptor limit a client got {stuck}")
    if len(held) >= args.nofile * 2:
        fail("the server never ran out of descriptors")
    time.sleep(args.hold)
    for s in held:
        s.close()
    # Many clients at once at the limit: each new one needs descriptors
    # while they are scarce.
    stop = threading.Event()
    outcomes = {}
    lock = threading.Lock()
    stressors = [threading.Thread(target=stress_client, args=(addr, stop, outcomes, lock))
                 for _ in range(args.count)]
    for t in stressors:
        t.start()
    time.sleep(args.stress)
    stop.set()
    for t in stressors:
        t.join(10)
    for outcome, n in sorted(outcomes.items()):
        figure(f"emfile_stress_{outcome}", n)
    freed = time.monotonic()
    while True:
        try:
            if get(addr, "/healthz", timeout=1.0)[0] == 200:
                break
        except (OSError, EOFError):
            pass
        if time.monotonic() - freed > args.within:
            fail(f"no answer within {args.within} s of the descriptors freeing up")
        time.sleep(0.01)
    figure("emfile_recovered_s", f"{time.monotonic() - freed:.3f}")
    after = scrape(addr)
    refusals = {r: rejected(after, r) - rejected(before, r) for r in ("accept_error", "limit")}
    for reason, n in refusals.items():
        figure(f"emfile_{reason}", f"{n:.0f}")
    if sum(refusals.values()) < 1:
        fail("running out of descriptors was not counted")
    for path in ("/healthz", "/api/v1/status"):
        status = get(addr, path)[0]
        if status != 200:
            fail(f"GET {path} answered {status} after the descriptors freed up")


BAD_REQUESTS = [
    # (name, bytes, statuses accepted; None means closed without an answer)
    ("cl_and_te", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nContent-Length: 4\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: c\r\n\r\n", {400}),
    ("te_and_cl", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: c\r\n\r\n", {400}),
    ("unknown_te", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: gzip\r\n\r\n", {501}),
    ("te_list", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", {501}),
    ("te_twice", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {501}),
    ("te_obfuscated", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding : chunked\r\n\r\n", {400}),
    ("two_lengths", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nContent-Length: 2\r\n"
     b"Content-Length: 40\r\n\r\n{}", {400}),
    ("signed_length", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nContent-Length: +2\r\n\r\n{}", {400}),
    ("http2_line", b"GET / HTTP/2.0\r\nHost: c\r\n\r\n", {505}),
    ("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400, 505}),
    ("http09", b"GET /\r\n\r\n", {400}),
    ("utf8_value", "GET /healthz HTTP/1.1\r\nHost: c\r\nX-Name: caf\u00e9\r\n\r\n".encode(), {400}),
    ("latin1_value", b"GET /healthz HTTP/1.1\r\nHost: c\r\nX-Name: \xff\xfe\r\n\r\n", {400}),
    ("non_ascii_name", b"GET /healthz HTTP/1.1\r\nHost: c\r\nX-N\xe4me: v\r\n\r\n", {400}),
    ("non_ascii_target", b"GET /h\xc3\xa9 HTTP/1.1\r\nHost: c\r\n\r\n", {400}),
    ("bare_lf", b"GET /healthz HTTP/1.1\nHost: c\n\n", {400}),
    ("bare_lf_in_field", b"GET /healthz HTTP/1.1\r\nHost: c\nX-Injected: 1\r\n\r\n", {400}),
    ("bare_cr", b"GET /healthz HTTP/1.1\r\nHost: c\rX-Injected: 1\r\n\r\n", {400}),
    ("obs_fold", b"GET /healthz HTTP/1.1\r\nHost: c\r\nX-A: 1\r\n 2\r\n\r\n", {400}),
    ("nul_byte", b"GET /healthz HTTP/1.1\r\nHost: c\r\nX-A: a\x00b\r\n\r\n", {400}),
    ("absolute_form", b"GET http://c/healthz HTTP/1.1\r\nHost: c\r\n\r\n", {400}),
    ("lowercase_version", b"GET /healthz http/1.1\r\nHost: c\r\n\r\n", {400}),
    ("extra_space", b"GET  /healthz HTTP/1.1\r\nHost: c\r\n\r\n", {400}),
    ("bad_chunk_size", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"-1\r\n\r\n", {400}),
    ("chunk_overrun", b"POST /api/v1/messages HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\n{}GET /smuggled HTTP/1.1\r\n\r\n", {400}),
]


def scenario_badreq(args, addr):
    """Each malformed request, sent on a keep-alive connection after a good
    one, is answered with an error status or closed, within a few seconds;
    the connection then ends, so it cannot corrupt the next request; and a
    new connection is served normally."""
    before = requests_total(scrape(addr))
    answered = 0
    for name, payload, allowed in BAD_REQUESTS:
        s = connect(addr, 5.0)
        reader = Reader(s)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
        if reader.response()[0] != 200:
            fail(f"{name}: the good request before it failed")
        start = time.perf_counter()
        status = None
        try:
            s.sendall(payload)
            status = reader.response()[0]
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            fail(f"{name}: no answer and no close within 5 s")
        seconds = time.perf_counter() - start
        # Whatever follows on this connection must not be served: after a
        # refusal the server no longer knows where the next request starts.
        follow_up = None
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
            follow_up = reader.response()[0]
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            fail(f"{name}: the connection neither closed nor answered the next request")
        s.close()
        figure(f"badreq_{name}", f"{status if status is not None else 'closed'} {seconds * 1000:.1f}ms")
        if status not in allowed and status is not None:
            fail(f"{name}: answered {status}, expected one of {sorted(allowed)}")
        if follow_up is not None:
            fail(f"{name}: a request after it on the same connection was answered {follow_up}")
        answered += status is not None
        if get(addr, "/healthz")[0] != 200:
            fail(f"{name}: a new connection was not served after it")
    after = requests_total(scrape(addr))
    # Each case: the good request, the refusal when answered, and a new
    # connection's /healthz; plus the scrape before.
    want = 2 * len(BAD_REQUESTS) + answered + 1
    figure("badreq_counted", f"{after - before:.0f}/{want}")
    if after - before != want:
        fail(f"{after - before:.0f} requests counted, {want} answered")


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "BREW",
           "PROPFIND", "M-SEARCH", "TRACE", "CONNECT"]
LABELISH = ['method="GET"', 'status="999"', 'le="+Inf"', '{a="b"}', "reason=%22x%22", "__name__",
            'version="0"', "metric{x=\"y\"}", "%7Bquantile%3D%220.5%22%7D", "\\", "other"]
PREFIXES = ["/", "/api/v1/", "/api/v1/runs/", "/api/v1/messages/", "/metrics/", "/healthz/", "/api/v2/"]


def random_request(rng):
    """One syntactically valid request with a random method, path, query and
    headers, often carrying label-shaped strings; `Connection: close` is
    added by the caller to the last of a batch."""
    method = rng.choice(METHODS) if rng.random() < 0.8 else "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_") for _ in range(rng.randint(1, 12)))
    path = rng.choice(PREFIXES) + "/".join(
        rng.choice(LABELISH) if rng.random() < 0.4 else "%08x" % rng.getrandbits(32)
        for _ in range(rng.randint(0, 3)))
    path = path.replace('"', "%22") if rng.random() < 0.5 else path
    path = path.replace(" ", "%20")
    if rng.random() < 0.3:
        path += "?" + "&".join(f"{rng.choice(LABELISH)}={rng.choice(LABELISH)}" for _ in range(2))
    headers = ["Host: chaos", f"X-Request-ID: {rng.choice(LABELISH)}",
               f"X-{rng.getrandbits(16):x}: {rng.choice(LABELISH)}"]
    body = b""
    if method in ("POST", "PUT", "PATCH") and rng.random() < 0.5:
        body = json.dumps({"type": rng.choice(LABELISH), "body": rng.choice(LABELISH)}).encode()
    head = f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + f"\r\nContent-Length: {len(body)}\r\n"
    return head.encode(), body, method == "HEAD"


def pipeline(addr, rng, batch):
    """Sends `batch` random requests pipelined on one connection and reads
    the answers; returns their statuses (fewer if the server refused one and
    closed)."""
    s = connect(addr)
    reqs = [random_request(rng) for _ in range(batch)]
    wire = []
    for i, (head, body, _) in enumerate(reqs):
        close = b"Connection: close\r\n" if i == batch - 1 else b""
        wire.append(head + close + b"\r\n" + body)
    statuses = []
    try:
        s.sendall(b"".join(wire))
    except (BrokenPipeError, ConnectionResetError):
        pass
    reader = Reader(s)
    try:
        for _, _, head in reqs:
            statuses.append(reader.response(head=head)[0])
    except (EOFError, ConnectionResetError):
        pass
    s.close()
    return statuses


def cardinality_worker(url, seed, count, batch, out):
    rng = random.Random(seed)
    addr = parse_url(url)
    answered = 0
    sent = 0
    while answered < count:
        statuses = pipeline(addr, rng, batch)
        answered += len(statuses)
        sent += batch
    out.put((answered, sent))


def series_count(addr):
    status, body, _ = get(addr, "/metrics")
    if status != 200:
        fail(f"/metrics answered {status}")
    return sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))


def scenario_cardinality(args, addr):
    """`--count` random requests from `--workers` processes, pipelined in
    batches; the series count of /metrics is sampled every half second and
    at the end, and must stay under `--bound`."""
    import multiprocessing
    out = multiprocessing.Queue()
    per_worker = -(-args.count // args.workers)
    procs = [multiprocessing.Process(target=cardinality_worker,
                                     args=(args.url, args.seed + i, per_worker, args.batch, out))
             for i in range(args.workers)]
    before = requests_total(scrape(addr))
    started = time.monotonic()
    for p in procs:
        p.start()
    series = [series_count(addr)]
    while any(p.is_alive() for p in procs):
        if time.monotonic() - started > args.seconds:
            for p in procs:
                p.terminate()
            fail(f"{args.count} requests took longer than {args.seconds} s")
        series.append(series_count(addr))
        time.sleep(0.5)
    if any(p.exitcode != 0 for p in procs):
        fail("a client process failed")
    results = [out.get(timeout=5) for _ in procs]
    elapsed = time.monotonic() - started
    series.append(series_count(addr))
    answered = sum(a for a, _ in results)
    sent = sum(s for _, s in results)
    counted = requests_total(scrape(addr)) - before
    figure("cardinality_requests", answered)
    figure("cardinality_requests_sent", sent)
    figure("cardinality_rps", f"{answered / elapsed:.0f}")
    figure("cardinality_counted", f"{counted:.0f}")
    figure("cardinality_series_max", max(series))
    if max(series) > args.bound:
        fail(f"{max(series)} series, over the bound of {args.bound}")
    # The counter covers every answered request plus the scrapes sent
    # meanwhile (series samples, and the one before).
    if counted < answered:
        fail(f"{answered} requests answered but only {counted:.0f} counted")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    fail(f"no Threads for pid {pid}")


def open_sse(addr, rcvbuf=None):
    """A connection that asked for the event stream and read its head."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Set before connecting, so the window the server sees stays small.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(IO_TIMEOUT)
    s.connect(addr)
    s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: chaos\r\n\r\n")
    reader = Reader(s)
    status_line = reader.line()
    if b" 200 " not in status_line:
        fail(f"GET /api/v1/events answered {status_line!r}")
    while reader.line():
        pass
    return s, reader


def subscribers(addr):
    return counter(scrape(addr), 'conductor_event_subscribers{transport="sse"}')


def append(sock, reader, body):
    sock.sendall(
        b"POST /api/v1/messages HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status, _, _ = reader.response()
    if status != 201:
        fail(f"POST /api/v1/messages answered {status}")


def scenario_ssestorm(args, addr):
    pid = args.pid or fail("ssestorm needs --pid")
    fds_before, threads_before = fd_count(pid), thread_count(pid)
    stop = threading.Event()
    opened = [0]
    lock = threading.Lock()

    def storm():
        while not stop.is_set():
            try:
                s = connect(addr)
                s.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: chaos\r\n\r\n")
                s.recv(64)
                s.close()
                with lock:
                    opened[0] += 1
            except OSError:
                pass

    health = {"ok": 0, "failed": 0}

    def poll_health():
        while not stop.is_set():
            try:
                status, _, _ = get(addr, "/healthz", timeout=5.0)
                health["ok" if status == 200 else "failed"] += 1
            except (OSError, EOFError, ValueError):
                health["failed"] += 1
            time.sleep(0.05)

    workers = [threading.Thread(target=storm, daemon=True) for _ in range(args.count)]
    poller = threading.Thread(target=poll_health, daemon=True)
    for t in workers + [poller]:
        t.start()
    fds_max = threads_max = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        fds_max = max(fds_max, fd_count(pid))
        threads_max = max(threads_max, thread_count(pid))
        time.sleep(0.02)
    stop.set()
    for t in workers + [poller]:
        t.join(IO_TIMEOUT)
    stopped = time.monotonic()
    # Given back: the descriptors and threads of the storm's streams.
    wait_for("the storm's streams freed", args.within,
             lambda: fd_count(pid) <= fds_before + 2 and thread_count(pid) <= threads_before + 1,
             pause=0.01)
    figure("sse_storm_streams", opened[0])
    figure("sse_storm_fds_max", fds_max)
    figure("sse_storm_threads_max", threads_max)
    figure("sse_storm_healthz_answered", health["ok"])
    figure("sse_storm_healthz_failed", health["failed"])
    figure("stream_freed_s", f"{time.monotonic() - stopped:.3f}")


def scenario_lagged(args, addr):
    pid = args.pid or fail("lagged needs --pid")
    threads_before = thread_count(pid)
    stuck = [open_sse(addr, rcvbuf=4096)[0] for _ in range(args.count)]
    wait_for("the subscribers", IO_TIMEOUT, lambda: subscribers(addr) == args.count)
    body = json.dumps({"type": "lag", "body": "x" * 2000}).encode()
    stop = threading.Event()

    def flood():
        s = connect(addr)
        reader = Reader(s)
        while not stop.is_set():
            append(s, reader, body)
        s.close()

    started = time.monotonic()
    floods = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for t in floods:
        t.start()
    wait_for("every stuck subscriber cut off", args.seconds, lambda: subscribers(addr) == 0, pause=0.02)
    cut = time.monotonic()
    stop.set()
    for t in floods:
        t.join(IO_TIMEOUT)
    wait_for("the cut subscribers' threads freed", args.within,
             lambda: thread_count(pid) <= threads_before + 1, pause=0.01)
    figure("lagged_cut_s", f"{cut - started:.3f}")
    figure("lagged_threads_freed_s", f"{time.monotonic() - cut:.3f}")
    for s in stuck:
        s.close()


def scenario_holdsse(args, addr):
    raise_nofile()
    held = [open_sse(addr, rcvbuf=4096)[0] for _ in range(args.count)]
    figure("sse_held", len(held))
    while True:
        time.sleep(3600)


def scenario_ssedelay(args, addr):
    sock, reader = open_sse(addr)
    poster = connect(addr)
    posted = Reader(poster)
    delays = []
    for i in range(args.samples):
        marker = f"delay-{i}-{random.random()}"
        body = json.dumps({"type": "delay", "body": marker}).encode()
        sent = time.perf_counter()
        append(poster, posted, body)
        while True:
            size = int(reader.line().split(b";")[0], 16)
            chunk = reader.exact(size)
            reader.exact(2)
            if marker.encode() in chunk:
                break
        delays.append((time.perf_counter() - sent) * 1000.0)
        time.sleep(args.pause)
    figure("sse_delivery_p50_ms", f"{percentile(delays, 50):.3f}")
    figure("sse_delivery_p99_ms", f"{percentile(delays, 99):.3f}")
    sock.close()
    poster.close()


SCENARIOS = {
    "idle": scenario_idle,
    "scrape": scenario_scrape,
    "timeouts": scenario_timeouts,
    "cap": scenario_cap,
    "headers": scenario_headers,
    "bodies": scenario_bodies,
    "emfile": scenario_emfile,
    "badreq": scenario_badreq,
    "cardinality": scenario_cardinality,
    "ssestorm": scenario_ssestorm,
    "lagged": scenario_lagged,
    "holdsse": scenario_holdsse,
    "ssedelay": scenario_ssedelay,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=300)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between slowloris bytes")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--expect-header-timeout", type=float, default=0.0,
                        help="wait up to this many seconds for the header timeout to close the slowloris")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--within", type=float, default=5.0)
    parser.add_argument("--max-growth", type=float, default=4.0, help="MiB of RSS growth allowed")
    parser.add_argument("--nofile", type=int, default=64)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--stress", type=float, default=2.0, help="seconds of many clients at the limit")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bound", type=int, default=1 << 30)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between samples")
    args = parser.parse_args()
    SCENARIOS[args.scenario](args, parse_url(args.url))


if __name__ == "__main__":
    main()
