#!/usr/bin/env python3
"""A loopback OTLP/HTTP JSON trace receiver that checks every request strictly, for e2e tests.

    otlp_receiver.py --port PORT --out FILE [--max-seconds N]

Listens on 127.0.0.1:PORT (0 picks a free port) and prints `listening PORT` once ready. Accepts
`POST /v1/traces` with `Content-Type: application/json` and parses each body into the official
`ExportTraceServiceRequest` message with `google.protobuf.json_format.Parse(...,
ignore_unknown_fields=False)`, after the OTLP JSON rules that proto3 JSON does not know:

- trace and span ids are hex, not base64: `traceId` must be 32 lower-case hex digits, `spanId` 16,
  `parentSpanId` 16 or empty, and none may be all zero; they are turned into base64 before parsing,
  as the official collector does;
- keys are lowerCamelCase (proto3 JSON also accepts snake_case field names; OTLP does not);
- enums (`kind`, `status.code`) are integers;
- 64-bit integers (`*UnixNano`, `intValue`) are decimal strings, as this project's exporter
  promises (the collector also accepts numbers);
- the body is strict JSON: no NaN/Infinity literals, no duplicate keys.

A valid request gets 200 `{}` and adds one JSON line per span to FILE:
{trace_id, span_id, parent_span_id ("" for none), name, kind, start_time_unix_nano,
end_time_unix_nano, attributes {key: value}, events [{name, time_unix_nano, attributes}],
status_code, status_message, service_name}. An invalid one gets 400 with a google.rpc.Status body
and adds `{"error": "..."}` to FILE (and stderr), so a check can grep for it. Other paths get 404,
other methods 405, other content types 415. Exits after --max-seconds (default 120) or on SIGTERM.
"""

import argparse
import base64
import json
import math
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

MAX_BODY_BYTES = 16 * 1024 * 1024
ID_HEX_LENGTHS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
INT64_STRING_KEYS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue"}
INT_ENUM_PATHS = {("span", "kind"), ("status", "code")}
HEX_DIGITS = set("0123456789abcdef")
INVALID_ARGUMENT = 3  # google.rpc.Code


class Invalid(ValueError):
    """The body breaks an OTLP JSON rule."""


def strict_json(body):
    """Parses strict JSON: NaN/Infinity literals and duplicate keys are errors."""

    def no_constants(name):
        raise Invalid(f"{name} is not JSON")

    def no_duplicates(pairs):
        obj = {}
        for key, value in pairs:
            if key in obj:
                raise Invalid(f"duplicate key {key!r}")
            obj[key] = value
        return obj

    try:
        return json.loads(body, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Invalid(f"not JSON: {e}") from e


def hex_id_to_base64(key, value, where):
    """Turns one hex id into the base64 proto3 JSON expects, after checking it strictly."""
    if not isinstance(value, str):
        raise Invalid(f"{where}.{key} must be a hex string")
    if key == "parentSpanId" and value == "":
        return ""
    want = ID_HEX_LENGTHS[key]
    if len(value) != want or not set(value) <= HEX_DIGITS:
        raise Invalid(f"{where}.{key} must be {want} lower-case hex digits, not {value!r}")
    if set(value) == {"0"}:
        raise Invalid(f"{where}.{key} is all zero")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def check_and_convert(node, where="request", parent_key=None):
    """Checks the OTLP JSON rules over the whole document and converts ids in place."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_and_convert(item, f"{where}[{i}]", parent_key)
        return
    if not isinstance(node, dict):
        return
    is_span_like = parent_key in ("spans", "links")
    if is_span_like:
        missing = [key for key in ("traceId", "spanId") if key not in node]
        if missing:
            raise Invalid(f"{where} has no {' or '.join(missing)}")
    for key in list(node):
        value = node[key]
        here = f"{where}.{key}"
        if "_" in key:
            raise Invalid(f"{here}: keys must be lowerCamelCase")
        if key in ID_HEX_LENGTHS and is_span_like:
            node[key] = hex_id_to_base64(key, value, where)
            continue
        if key in INT64_STRING_KEYS and not isinstance(value, str):
            raise Invalid(f"{here} is a 64-bit integer and must be a decimal string")
        context = "span" if parent_key == "spans" else parent_key
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if (context, key) in INT_ENUM_PATHS and not is_int:
            raise Invalid(f"{here} is an enum and must be an integer")
        check_and_convert(value, here, key)


def parse_request(body):
    """The parsed ExportTraceServiceRequest, or Invalid / json_format.ParseError."""
    document = strict_json(body)
    if not isinstance(document, dict):
        raise Invalid("the body must be a JSON object")
    check_and_convert(document)
    message = ExportTraceServiceRequest()
    json_format.Parse(json.dumps(document), message, ignore_unknown_fields=False)
    return message


def any_value(value):
    """A plain Python value for an AnyValue."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "double_value":
        d = value.double_value
        return d if math.isfinite(d) else str(d)
    if kind in ("string_value", "int_value", "bool_value"):
        return getattr(value, kind)
    return json_format.MessageToDict(value)


def attributes(key_values):
    return {kv.key: any_value(kv.value) for kv in key_values}


def span_lines(message):
    """One dict per span in the request."""
    for resource_spans in message.resource_spans:
        service = attributes(resource_spans.resource.attributes).get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "events": [
                        {
                            "name": e.name,
                            "time_unix_nano": e.time_unix_nano,
                            "attributes": attributes(e.attributes),
                        }
                        for e in span.events
                    ],
                    "status_code": span.status.code,
                    "status_message": span.status.message,
                    "service_name": service,
                }


class Recorder:
    """Appends JSON lines to the output file; safe to call from many handler threads."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, records):
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def make_handler(recorder):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            """Requests are recorded in the output file; the access log would only be noise."""

        def answer(self, status, body):
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def refuse(self, status, message):
            print(f"otlp_receiver: {status} {message}", file=sys.stderr, flush=True)
            recorder.write([{"error": f"{status} {message}"}])
            self.answer(status, {"code": INVALID_ARGUMENT, "message": message})

        def do_POST(self):
            if self.path != "/v1/traces":
                return self.refuse(404, f"unknown path {self.path}")
            content_type = self.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() != "application/json":
                return self.refuse(
                    415, f"Content-Type must be application/json, not {content_type!r}"
                )
            encoding = self.headers.get("Content-Encoding", "identity")
            if self.headers.get("Transfer-Encoding") or encoding != "identity":
                return self.refuse(
                    415, "only an identity-encoded body with Content-Length is supported"
                )
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self.refuse(411, "Content-Length is required")
            if not 0 <= length <= MAX_BODY_BYTES:
                return self.refuse(413, f"Content-Length {length} is out of range")
            body = self.rfile.read(length)
            try:
                message = parse_request(body)
            except (Invalid, json_format.ParseError) as e:
                return self.refuse(400, f"{type(e).__name__}: {e}")
            recorder.write(list(span_lines(message)))
            self.answer(200, {})

        def do_other(self):
            self.refuse(405, f"method {self.command} is not allowed")

        do_GET = do_PUT = do_DELETE = do_PATCH = do_other

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks one")
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="where span lines are appended"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="exit after this long")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(Recorder(args.out)))
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        stop.wait(args.max_seconds)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
