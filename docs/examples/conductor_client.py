"""A client for conductor-metrics, on the Python standard library only.

`Conductor` reports runs and their events (docs/instrumenting.md). `Metrics` also sends
updates to declared metrics, which the server must declare: start it with
`--metrics-file docs/examples/orchestrator-metrics.json` for the names used here. Updates are
queued and posted to /api/v1/metrics in batches of up to 1000, which the server takes whole or
not at all, and answers once they are on disk. Both read CONDUCTOR_URL and CONDUCTOR_API_KEY.
"""
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

MAX_BATCH = 1000  # the server's limit per request
ACTIVE_GAUGES = {"git_merge": "git_active_merges"}  # track() keeps these at the count in progress
log = logging.getLogger("conductor_client")


class Conductor:
    """Reports runs and their events to conductor-metrics."""

    def __init__(self, url=None, api_key=None):
        self.url = (url or os.environ.get("CONDUCTOR_URL") or "http://127.0.0.1:14355").rstrip("/")
        self.api_key = api_key or os.environ.get("CONDUCTOR_API_KEY")

    def _post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                raise  # the server's trouble, not the request's: worth sending again
            err = json.load(e).get("error", {})
            raise RuntimeError(f"{path}: {e.code} {err.get('message', e.reason)}") from None

    def start_run(self, **fields):
        return self._post("/api/v1/runs", fields)["run_id"]

    def events(self, run_id, *events):
        return self._post(f"/api/v1/runs/{run_id}/events", list(events))["accepted"]

    def complete(self, run_id):
        return self._post(f"/api/v1/runs/{run_id}/complete", {})

    def fail(self, run_id, error=None):
        return self._post(f"/api/v1/runs/{run_id}/fail", {"error": error})


class Metrics(Conductor):
    """A Conductor that also queues updates to declared metrics and sends them in batches.
    Safe to share across threads."""

    def __init__(self, url=None, api_key=None, max_delay=5.0):
        super().__init__(url, api_key)
        self.max_delay = max_delay  # seconds an update may wait for its batch to fill
        self._pending, self._lock, self._sent_at = [], threading.RLock(), time.monotonic()

    # Label names are keyword arguments, so a label may be called anything, even `name`.
    def inc(self, name, value=1, /, **labels):
        self._queue(name, "inc", value, labels)

    def add(self, name, value, /, **labels):
        self._queue(name, "add", value, labels)

    def set(self, name, value, /, **labels):
        self._queue(name, "set", value, labels)

    def observe(self, name, value, /, **labels):
        self._queue(name, "observe", value, labels)

    def _queue(self, name, op, value, labels):
        with self._lock:
            self._pending.append({"name": name, "labels": labels, op: value})
            due = len(self._pending) >= MAX_BATCH or time.monotonic() - self._sent_at >= self.max_delay
        if due:
            self.try_flush()

    def flush(self):
        """Sends every queued update; returns how many the server accepted.

        A batch the server refuses is dropped and raises RuntimeError, naming the update and
        field (`updates[2].labels.model: ...`). One that cannot be delivered, or that meets a
        server error, stays queued for the next flush and raises OSError.
        """
        accepted = 0
        with self._lock:
            self._sent_at = time.monotonic()
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                try:
                    accepted += self._post("/api/v1/metrics", batch)["accepted"]
                except RuntimeError:
                    del self._pending[:len(batch)]  # refused: sending it again would not help
                    raise
                del self._pending[:len(batch)]
        return accepted

    def try_flush(self):
        """Flushes, logging instead of raising when the server cannot be reached."""
        try:
            self.flush()
        except OSError as e:
            log.warning("conductor-metrics: %d updates kept for later: %s", len(self._pending), e)

    @contextmanager
    def track(self, operation, result_default="success", **labels):
        """Times the block into `<operation>_duration_seconds` and counts it in
        `<operation>_total{result}`. The block may set meta["result"]; if it raises, the result
        is "error" unless the block set another. Sent at both ends, so the gauge of
        ACTIVE_GAUGES (git_active_merges) shows the operation while it runs."""
        active = ACTIVE_GAUGES.get(operation)
        if active:
            self.add(active, 1)
            self.try_flush()
        meta, start = {"result": result_default}, time.monotonic()
        try:
            yield meta
        except BaseException:
            if meta["result"] == result_default:
                meta["result"] = "error"
            raise
        finally:
            self.observe(operation + "_duration_seconds", time.monotonic() - start, **labels)
            self.inc(operation + "_total", result=meta["result"], **labels)
            if active:
                self.add(active, -1)
            self.try_flush()

    @contextmanager
    def track_llm(self, model, provider, rate_limit_errors=()):
        """Records one LLM request. The block sets call["prompt_tokens"],
        call["completion_tokens"] and call["cost"] (dollars) when it has them. If it raises,
        the result is "rate_limit" for one of `rate_limit_errors` (counted in
        llm_rate_limit_events_total too, and not timed: a refusal is quick and would make the
        model look fast), "timeout" for a TimeoutError, and "error" otherwise, unless the block
        set call["result"] itself."""
        call, start = {"result": "success"}, time.monotonic()
        try:
            yield call
        except BaseException as e:
            if call["result"] == "success":
                call["result"] = ("rate_limit" if isinstance(e, rate_limit_errors)
                                  else "timeout" if isinstance(e, TimeoutError) else "error")
            raise
        finally:
            self.inc("llm_requests_total", model=model, provider=provider, result=call["result"])
            if call["result"] == "rate_limit":
                self.inc("llm_rate_limit_events_total", model=model, provider=provider)
            else:
                self.observe("llm_request_duration_seconds", time.monotonic() - start,
                             model=model, provider=provider)
            for kind in ("prompt", "completion"):
                if call.get(kind + "_tokens"):
                    self.inc("llm_tokens_total", call[kind + "_tokens"], model=model, type=kind)
            if call.get("cost"):
                self.inc("llm_cost_dollars_total", call["cost"], model=model)
