#!/usr/bin/env bash
# Benchmarks the release server over loopback with wrk and prints one figure per line:
#
#   metrics_rps <n> req/s        GET /metrics, 32 connections, 2 threads, 5 s
#   message_appends <n> acks/s   POST /api/v1/messages answered 201, 64 connections, 2 threads,
#                                the median of 3 rounds of 3 s
#   events_ingest <n> events/s   POST /api/v1/runs/{id}/events, batches of 100, 8 keep-alive connections, 5 s
#   appends_with_100_idle_subscribers <n> acks/s
#                                the same beside 100 SSE streams that never read, in rounds
#                                alternating with message_appends' (>= 0.8 x message_appends: a
#                                slow subscriber never slows a publisher)
#   sse_delivery_p50 <n> ms      from sending an append to its event arriving on an SSE stream,
#                                its durable write included, 200 samples 10 ms apart (< 2)
#   idle_rss <n> MiB             VmRSS of a fresh server after one GET /healthz (<= 4)
#   idle_rss_anon <n> MiB        RssAnon of that server: its private memory (<= 1)
#   idle_threads <n> threads     the threads of that server (<= 8)
#   binary_size <n> MiB          the (stripped) release binary (<= 1.65, a ratchet: issue 23's 1.5 is open)
#   metric_updates <n> updates/s POST /api/v1/metrics answered 200 (durable), batches of 1000, 8 connections, 5 s
#   render_declared_10k_us <n> us  p50 server-side render of /metrics (timed on HEAD), 10,000 declared series valued in dollars
#   render_declared_10k_counts_us <n> us  the same with whole-number values (token counts)
#   src_http_lines, unsafe_blocks, import_circles: scripts/code_figures.py (<= 4500, <= 6, 0)
#   src_lines_non_test, longest_fn_lines: scripts/code_figures.py (<= 21,017, a ratchet: issue
#                                23's target of 19,000 is open work; <= 80, its target)
#
# The three declared-metrics figures run on servers started with docs/examples/orchestrator-metrics.json.
# Targets, reported rather than asserted: metric_updates >= 200,000/s, render_declared_10k_us < 1000.
#
# Fails if any request fails or a figure is out of its bound, so a broken server cannot produce
# a flattering figure.
#
# With --throughput it prints only message_appends, events_ingest and metric_updates, and checks
# nothing: scripts/ab-throughput.sh runs it that way, on two binaries in turn (CM_BIN).
set -euo pipefail

throughput_only=
if [[ ${1:-} == --throughput ]]; then
    throughput_only=1
elif (($# > 0)); then
    echo "usage: bench-http.sh [--throughput]" >&2
    exit 2
fi

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly DURATION=5s
# Each of the six alternating append rounds.
readonly APPEND_DURATION=3s
# wrk stops by itself after DURATION; this only guards against a wedged wrk.
readonly WRK_DEADLINE_SECONDS=30
readonly MESSAGE_BODY='{"type":"bench","body":"hello"}'

need_cmd cargo curl wrk timeout awk python3

readonly CLIENTS="$CM_REPO_ROOT/scripts/chaos_clients.py"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-bench.XXXXXX")
holder_pid=
cleanup() {
    if [[ -n $holder_pid ]]; then
        kill "$holder_pid" 2>/dev/null || true
    fi
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
anon_kib=$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$CM_PID/status")
idle_rss_anon=$(mib $((anon_kib * 1024)))
idle_threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$CM_PID/status")
binary_size=$(mib "$(stat -c %s "$CM_BIN")")

# GET /metrics: any non-2xx answer or socket error fails the run.
[[ -n $throughput_only ]] ||
    timeout "$WRK_DEADLINE_SECONDS" wrk -t2 -c32 -d"$DURATION" --timeout 5s "$CM_URL/metrics" >"$tmp/metrics.out"
if [[ -z $throughput_only ]]; then
    if grep -E 'Non-2xx|Socket errors' "$tmp/metrics.out" >&2; then
        die "GET /metrics had failed requests"
    fi
    metrics_rps=$(awk '$1 == "Requests/sec:" { printf "%.0f", $2 }' "$tmp/metrics.out")
    [[ -n $metrics_rps ]] || { cat "$tmp/metrics.out" >&2; die "no Requests/sec in wrk output"; }
fi

# Writes a wrk script that POSTs BODY_FILE and counts answers with status WANT
# against everything else, summed over wrk's threads.
write_counting_script() {
    local want=$1 body_file=$2 out=$3
    {
        printf 'wrk.method = "POST"\n'
        printf 'wrk.headers["Content-Type"] = "application/json"\n'
        printf 'local f = io.open("%s", "r")\nwrk.body = f:read("*a")\nf:close()\n' "$body_file"
        cat <<EOF
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) created = 0 other = 0 end
function response(status, headers, body)
    if status == $want then created = created + 1 else other = other + 1 end
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
    } >"$out"
}

# Runs wrk with a counting script; prints the wanted answers per second.
counted_rate() {
    local name=$1 connections=$2 url=$3 script=$4 out="$tmp/$1.out" duration=${5:-$DURATION}
    timeout "$WRK_DEADLINE_SECONDS" wrk -t2 -c"$connections" -d"$duration" --timeout 5s -s "$script" "$url" >"$out"
    local created other socket_errors seconds
    created=$(wrk_value created "$out") || { cat "$out" >&2; die "$name: no counts from wrk"; }
    other=$(wrk_value other "$out")
    socket_errors=$(wrk_value socket_errors "$out")
    seconds=$(wrk_value seconds "$out")
    if ((other > 0 || socket_errors > 0)); then
        die "$name: $other unexpected answers, $socket_errors socket errors ($created good)"
    fi
    ((created > 0)) || die "$name: no good answer at all"
    awk -v n="$created" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }'
}

printf '%s' "$MESSAGE_BODY" >"$tmp/message.json"
write_counting_script 201 "$tmp/message.json" "$tmp/messages.lua"

# Prints the median of its arguments.
median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# The appends alone, then beside 100 SSE subscribers whose clients never read, in alternating
# rounds on the same server: the figures are the medians, so a burst of noise from another
# process on this shared machine, or the journal's growth, weighs on both sides alike.
readonly APPEND_ROUNDS=3
alone=() beside=()
for round in $(seq "$APPEND_ROUNDS"); do
    alone+=("$(counted_rate "message_appends_$round" 64 "$CM_URL/api/v1/messages" "$tmp/messages.lua" "$APPEND_DURATION")")
    [[ -z $throughput_only ]] || continue
    python3 "$CLIENTS" holdsse --url "$CM_URL" --count 100 >"$tmp/holdsse.out" &
    holder_pid=$!
    for _ in $(seq 100); do
        grep -q '^sse_held 100$' "$tmp/holdsse.out" && break
        sleep 0.1
    done
    grep -q '^sse_held 100$' "$tmp/holdsse.out" || die "the 100 idle subscribers did not connect"
    beside+=("$(counted_rate "appends_with_100_idle_subscribers_$round" 64 "$CM_URL/api/v1/messages" "$tmp/messages.lua" "$APPEND_DURATION")")
    kill "$holder_pid"
    wait "$holder_pid" 2>/dev/null || true
    holder_pid=
done
message_appends=$(median "${alone[@]}")
if [[ -z $throughput_only ]]; then
    appends_idle_subs=$(median "${beside[@]}")
    printf 'append rounds: alone %s, beside 100 idle subscribers %s acks/s\n' "${alone[*]}" "${beside[*]}" >&2
    timeout 60 python3 "$CLIENTS" ssedelay --url "$CM_URL" --samples 200 --pause 0.01 >"$tmp/ssedelay.out" ||
        die "ssedelay failed"
    sse_delivery_p50=$(awk '$1 == "sse_delivery_p50_ms" { print $2 }' "$tmp/ssedelay.out")
fi

# A batch of 100 events for one long-lived run: phases, tokens and gates.
python3 - >"$tmp/events.json" <<'PY'
import json
phases = ["design", "implement", "test", "review"]
events = []
for i in range(25):
    p = phases[i % 4]
    events += [
        {"type": "phase_started", "phase": p},
        {"type": "tokens", "phase": p, "model": "bench-model", "input_tokens": 100, "output_tokens": 20},
        {"type": "gate_checked", "gate": f"gate-{i % 3}", "passed": i % 5 != 0},
        {"type": "phase_completed", "phase": p, "success": True, "duration_ms": 1500},
    ]
print(json.dumps(events))
PY
curl -fsS -o /dev/null -X POST "$CM_URL/api/v1/runs" -d '{"run_id":"bench-events"}'
write_counting_script 200 "$tmp/events.json" "$tmp/events.lua"
batches=$(counted_rate events_ingest 8 "$CM_URL/api/v1/runs/bench-events/events" "$tmp/events.lua")
events_ingest=$((batches * 100))

# Declared metrics, on a second server with the example declarations.
stop_server
start_server "$tmp/declared" --metrics-file "$CM_REPO_ROOT/docs/examples/orchestrator-metrics.json"

# A batch of 1000 updates: counter increments over a few label sets, histogram observations
# and gauge sets.
python3 - >"$tmp/updates.json" <<'PY'
import json
models = ["claude-sonnet-4", "claude-haiku", "gpt-5"]
updates = []
for i in range(200):
    m = {"model": models[i % 3]}
    llm = dict(m, provider="anthropic" if i % 3 < 2 else "openai")
    updates += [
        {"name": "llm_requests_total", "labels": dict(llm, result="rate_limit" if i % 10 == 0 else "success"), "inc": 1},
        {"name": "llm_tokens_total", "labels": dict(m, type="prompt" if i % 2 else "completion"), "inc": 100 + i},
        {"name": "llm_request_duration_seconds", "labels": llm, "observe": 0.2 + (i % 50) / 10},
        {"name": "task_execution_duration_seconds", "labels": {"phase": "execute", "worker_profile": "w%d" % (i % 4)}, "observe": 1.5 * i},
        {"name": "tasks_by_state", "labels": {"status": ("queued", "running", "completed")[i % 3]}, "set": i},
    ]
assert len(updates) == 1000
print(json.dumps(updates))
PY
write_counting_script 200 "$tmp/updates.json" "$tmp/updates.lua"
update_batches=$(counted_rate metric_updates 8 "$CM_URL/api/v1/metrics" "$tmp/updates.lua")
metric_updates=$((update_batches * 1000))
if [[ -n $throughput_only ]]; then
    figure message_appends "$message_appends" acks/s
    figure events_ingest "$events_ingest" events/s
    figure metric_updates "$metric_updates" updates/s
    exit 0
fi

# Sets render_us to the p50 render time of /metrics with 10,000 declared series: on a fresh
# server (started in this shell, so the exit trap stops it if anything fails), FAMILY gets ten
# batches of 1000 new label sets, each series incremented by VALUE. 10,000 is exactly the
# registry's per-family series cap, so none may go to the overflow series.
#
# The render time is the server's own, timed on HEAD /metrics: HEAD renders the whole scrape to
# measure it and sends only the head, so the request log's duration_ms, from the request's arrival
# to its last byte handed to the connection, covers the render and leaves out curl and the
# loopback round trip. (A GET's answer is written as it is rendered, so its duration_ms includes
# sending it.) The median over RENDER_SCRAPES sequential keep-alive scrapes.
readonly RENDER_SCRAPES=200
render_p50() {
    local family=$1 value=$2 dir=$3 batch scrape series logged_before
    start_server "$dir" --metrics-file "$CM_REPO_ROOT/docs/examples/orchestrator-metrics.json"
    for batch in $(seq 0 9); do
        python3 - "$family" "$value" "$batch" >"$tmp/series.json" <<'PY'
import json, sys
family, value, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
# llm_tokens_total has two labels: 5000 models x 2 types; llm_cost_dollars_total one.
def labels(n):
    if family == "llm_tokens_total":
        return {"model": "bench-%05d" % (n // 2), "type": ("prompt", "completion")[n % 2]}
    return {"model": "bench-%05d" % n}
print(json.dumps([{"name": family, "labels": labels(batch * 1000 + i), "inc": value} for i in range(1000)]))
PY
        curl -fsS -o /dev/null --max-time 10 -X POST -H 'Content-Type: application/json' \
            --data-binary "@$tmp/series.json" "$CM_URL/api/v1/metrics" || die "filling 10,000 series of $family failed"
    done
    scrape=$(curl -fsS --max-time 10 "$CM_URL/metrics")
    series=$(grep -c "^$family{model=\"bench-" <<<"$scrape" || true)
    ((series == 10000)) || die "expected 10000 $family series, the scrape has $series"
    if grep -E '^conductor_series_overflow_total\{[^}]*\} [1-9]' <<<"$scrape" >&2; then
        die "series of $family went to the overflow series"
    fi
    logged_before=$(grep -c '"path":"/metrics"' "$CM_STDERR" || true)
    local urls=() _
    for _ in $(seq "$RENDER_SCRAPES"); do
        urls+=(-o /dev/null "$CM_URL/metrics")
    done
    curl -fsS --head --max-time 60 "${urls[@]}" || die "HEAD /metrics failed while timing renders"
    local deadline=$((SECONDS + 10))
    until (($(grep -c '"path":"/metrics"' "$CM_STDERR" || true) >= logged_before + RENDER_SCRAPES)); do
        ((SECONDS < deadline)) || die "the request log has fewer than $RENDER_SCRAPES lines for HEAD /metrics"
        sleep 0.05
    done
    render_us=$(grep '"path":"/metrics"' "$CM_STDERR" | tail -n "$RENDER_SCRAPES" | python3 -c '
import json, statistics, sys
lines = [json.loads(line) for line in sys.stdin]
bad = [l["status"] for l in lines if l["status"] != 200]
if bad:
    sys.exit("render timing: answers %s" % bad)
print("%.0f" % (statistics.median(l["duration_ms"] for l in lines) * 1000))')
    stop_server
}
stop_server
# Dollars: fractional values, which take the general float formatting path.
render_p50 llm_cost_dollars_total 0.0125 "$tmp/render-dollars"
render_declared_10k_us=$render_us
# Token counts: whole numbers, which take the integer fast path.
render_p50 llm_tokens_total 1500 "$tmp/render-counts"
render_declared_10k_counts_us=$render_us

figure metrics_rps "$metrics_rps" req/s
figure message_appends "$message_appends" acks/s
figure appends_with_100_idle_subscribers "$appends_idle_subs" acks/s
figure events_ingest "$events_ingest" events/s
figure sse_delivery_p50 "$sse_delivery_p50" ms
figure idle_rss "$idle_rss" MiB
figure idle_rss_anon "$idle_rss_anon" MiB
figure idle_threads "$idle_threads" threads
figure binary_size "$binary_size" MiB
figure metric_updates "$metric_updates" updates/s
figure render_declared_10k_us "$render_declared_10k_us" us
figure render_declared_10k_counts_us "$render_declared_10k_counts_us" us
python3 "$CM_REPO_ROOT/scripts/code_figures.py" >"$tmp/code.out"
cat "$tmp/code.out"

code_value() {
    awk -v name="$1" '$1 == name { print $2 }' "$tmp/code.out"
}
check appends_with_100_idle_subscribers "$appends_idle_subs" '>=' "$(awk -v m="$message_appends" 'BEGIN { print 0.8 * m }')"
check sse_delivery_p50 "$sse_delivery_p50" '<' 2
check idle_threads "$idle_threads" '<=' 8
check idle_rss_anon "$idle_rss_anon" '<=' 1
# Issue 23's footprint table: VmRSS counts the pages of the binary and libc
# mapped from the page cache too (docs/operations.md).
check idle_rss "$idle_rss" '<=' 4
# On the bytes, as the printed figure is rounded to two decimals. A ratchet: issue 23's target,
# 1.5 MiB, is met at opt-level z, which slows events ingest past its A/B bound (Cargo.toml).
check binary_size "$(stat -c %s "$CM_BIN")" '<=' $((165 * 1024 * 1024 / 100))
# Under 4,500 since the fourth pass of issue 23; a ratchet.
check src_http_lines "$(code_value src_http_lines)" '<=' 4500
check unsafe_blocks "$(code_value unsafe_blocks)" '<=' 6
check import_circles "$(code_value import_circles)" '==' 0
# Issue 23's target for the longest function, met; and a ratchet on the non-test lines where
# its fifth pass left them (its target, 19,000, is open work), so that they cannot grow back.
check src_lines_non_test "$(code_value src_lines_non_test)" '<=' 21017
check longest_fn_lines "$(code_value longest_fn_lines)" '<=' 80
end_checks
