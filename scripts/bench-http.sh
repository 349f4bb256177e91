#!/usr/bin/env bash
# Benchmarks the release server over loopback with wrk and prints one figure per line:
#
#   metrics_rps <n> req/s        GET /metrics, 32 connections, 2 threads, 5 s
#   message_appends <n> acks/s   POST /api/v1/messages answered 201, 64 connections, 2 threads, 5 s
#   idle_rss <n> MiB             VmRSS of a fresh server after one GET /healthz
#   binary_size <n> MiB          the (stripped) release binary
#
# Fails if any request fails, so a broken server cannot produce a flattering figure.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly DURATION=5s
# wrk stops by itself after DURATION; this only guards against a wedged wrk.
readonly WRK_DEADLINE_SECONDS=30
readonly MESSAGE_BODY='{"type":"bench","body":"hello"}'

need_cmd cargo curl wrk timeout awk

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-bench.XXXXXX")
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

# Prints one wrk `NAME value` line of the given name from a wrk report.
wrk_value() {
    awk -v name="$1" '$1 == name { print $2; found = 1 } END { exit !found }' "$2"
}

mib() {
    awk -v bytes="$1" 'BEGIN { printf "%.2f", bytes / 1048576 }'
}

build_release
start_server "$tmp/data"

curl -fsS -o /dev/null --max-time 5 "$CM_URL/healthz"
rss_kib=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$CM_PID/status")
[[ -n $rss_kib ]] || die "no VmRSS for pid $CM_PID"
idle_rss=$(mib $((rss_kib * 1024)))
binary_size=$(mib "$(stat -c %s "$CM_BIN")")

# GET /metrics: any non-2xx answer or socket error fails the run.
timeout "$WRK_DEADLINE_SECONDS" wrk -t2 -c32 -d"$DURATION" --timeout 5s "$CM_URL/metrics" >"$tmp/metrics.out"
if grep -E 'Non-2xx|Socket errors' "$tmp/metrics.out" >&2; then
    die "GET /metrics had failed requests"
fi
metrics_rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$tmp/metrics.out")
[[ -n $metrics_rps ]] || { cat "$tmp/metrics.out" >&2; die "no Requests/sec in wrk output"; }

# POST /api/v1/messages: the script counts 201s and everything else per thread, and sums them.
cat >"$tmp/messages.lua" <<EOF
wrk.method = "POST"
wrk.body = '$MESSAGE_BODY'
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    created = 0
    other = 0
end

function response(status, headers, body)
    if status == 201 then
        created = created + 1
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local c, o = 0, 0
    for _, thread in ipairs(threads) do
        c = c + thread:get("created")
        o = o + thread:get("other")
    end
    local e = summary.errors
    io.write(string.format("created %d\nother %d\nseconds %.6f\n", c, o, summary.duration / 1e6))
    io.write(string.format("socket_errors %d\n", e.connect + e.read + e.write + e.timeout))
end
EOF
timeout "$WRK_DEADLINE_SECONDS" wrk -t2 -c64 -d"$DURATION" --timeout 5s -s "$tmp/messages.lua" \
    "$CM_URL/api/v1/messages" >"$tmp/messages.out"
created=$(wrk_value created "$tmp/messages.out") || { cat "$tmp/messages.out" >&2; die "no counts from wrk"; }
other=$(wrk_value other "$tmp/messages.out")
socket_errors=$(wrk_value socket_errors "$tmp/messages.out")
seconds=$(wrk_value seconds "$tmp/messages.out")
if ((other > 0 || socket_errors > 0)); then
    die "POST /api/v1/messages: $other answers other than 201, $socket_errors socket errors ($created 201s)"
fi
((created > 0)) || die "POST /api/v1/messages: no 201 at all"
message_appends=$(awk -v n="$created" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')

figure metrics_rps "$metrics_rps" req/s
figure message_appends "$message_appends" acks/s
figure idle_rss "$idle_rss" MiB
figure binary_size "$binary_size" MiB
