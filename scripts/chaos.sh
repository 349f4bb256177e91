#!/usr/bin/env bash
# Hardening checks: hostile and overwhelming clients against the release server, over loopback
# only, each step bounded in count and time. Prints one figure per line:
#
#   idle_2000_metrics_p99 <n> ms    GET /metrics from new clients beside 2,000 idle keep-alive and
#                                   300 slowloris connections: median of 3 rounds of 100 (<= 100)
#   slowloris_rss <n> MiB           the server's largest VmRSS meanwhile (< 64)
#   flood_metrics_p99 <n> ms        GET /metrics under a wrk flood of POST /api/v1/messages
#                                   (256 connections): median of 3 rounds of 5 s (< 50)
#   absurd_length_survived <0|1>    absurd, huge, truncated and endless bodies from 50 clients at
#                                   once: every absurd length got 413 and the server lives (1)
#   emfile_recovered_s <n> s        out of descriptors, then from the moment they free up to the
#                                   next answer (<= 5)
#   cardinality_series_max <n>      most series seen in /metrics during 100,000 random requests
#                                   (<= 400, the bound derived in docs/operations.md)
#   sse_storm_fds_max <n>           the server's most descriptors while 12 clients open SSE streams,
#                                   read their first bytes and close them, for 6 s (< 1000)
#   sse_storm_healthz_failed <n>    GET /healthz every 50 ms meanwhile that got no 200 (0)
#   stream_freed_s <n> s            from the storm's end until its descriptors and threads are
#                                   given back (<= 1)
#   lagged_threads_freed_s <n> s    50 SSE subscribers that never read, cut off for lagging under a
#                                   flood of appends: from the last cut to their threads gone (<= 1)
#
# It also checks, failing on the first miss: idle and header timeouts close and count connections,
# the connection cap closes the oldest idle connection first, heads over 16 KiB get 431 with flat
# memory, and smuggling-shaped or malformed requests get 400/501/505 and end their connection.
# Exits non-zero when a check fails or a figure is out of bounds. Takes about a minute and a half.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly CLIENTS="$CM_REPO_ROOT/scripts/chaos_clients.py"
readonly IDLE_P99_MAX_MS=100
readonly RSS_MAX_MIB=64
readonly FLOOD_P99_MAX_MS=50
readonly EMFILE_RECOVERY_MAX_S=5
readonly STORM_FDS_MAX=1000
readonly STREAM_FREED_MAX_S=1
# docs/operations.md, "Series bound": 65 fixed + 8 methods x 25 status labels + 13 event types
# + 4 run outcomes x 15 run-duration series + 2 delivery results (check_doc_figures.sh checks
# that the two agree).
readonly SERIES_BOUND=399
readonly CARDINALITY_REQUESTS=100000
# wrk stops by itself; this only guards against a wedged wrk.
readonly WRK_DEADLINE_SECONDS=30

need_cmd cargo curl wrk python3 timeout awk sort

# The settings under test come from each step, never from the caller's shell.
unset CONDUCTOR_IDLE_TIMEOUT CONDUCTOR_HEADER_TIMEOUT CONDUCTOR_MAX_CONNECTIONS CONDUCTOR_LOG

# 2,300 client sockets live in this process tree, beside the server's own.
ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-chaos.XXXXXX")
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

step() {
    printf '== %s\n' "$*" >&2
}

# Runs one client scenario against the current server; its lines go to stderr and to $tmp/$1.out.
clients() {
    local scenario=$1
    shift
    timeout 120 python3 "$CLIENTS" "$scenario" --url "$CM_URL" --pid "$CM_PID" "$@" \
        >"$tmp/$scenario.out" || { cat "$tmp/$scenario.out" >&2; die "$scenario failed"; }
    sed 's/^/   /' "$tmp/$scenario.out" >&2
}

# The value of one `name value` line of a scenario's output.
value() {
    awk -v name="$2" '$1 == name { print $2; found = 1 } END { exit !found }' "$tmp/$1.out" ||
        die "$1: no $2 figure"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# Whether `$1 $2 $3` holds, e.g. `holds 12.5 '<' 50`.
holds() {
    awk -v g="$1" -v op="$2" -v b="$3" 'BEGIN {
        ok = (op == "<") ? g < b : (op == "<=") ? g <= b : (op == "==") ? g == b : 0
        exit !ok
    }'
}

failures=()
# Records a figure out of its bound and goes on, so that every figure is printed first.
bound() {
    holds "$2" "$3" "$4" || failures+=("$1 is $2, not $3 $4")
}

build_release
figures=()

step "2,000 idle keep-alive and 300 slowloris connections, default timeouts"
start_server "$tmp/idle"
clients idle --idle 2000 --slow 300 --interval 2 --samples 300 --rounds 3 --expect-header-timeout 15
mapfile -t round_p99s < <(awk '$1 == "idle_round_p99_ms" { print $2 }' "$tmp/idle.out")
idle_p99=$(median "${round_p99s[@]}")
slowloris_rss=$(value idle idle_rss_mib)
[[ $(value idle slowloris_closed) == 300 ]] || die "not every slowloris connection was closed"
[[ $(value idle idle_still_open) == 2000 ]] || die "idle connections were closed before their timeout"
figures+=("idle_2000_metrics_p99 $idle_p99 ms" "slowloris_rss $slowloris_rss MiB")
bound idle_2000_metrics_p99 "$idle_p99" '<=' "$IDLE_P99_MAX_MS"
bound slowloris_rss "$slowloris_rss" '<' "$RSS_MAX_MIB"
stop_server

step "idle and header timeouts of 1 s"
start_server "$tmp/timeouts" CONDUCTOR_IDLE_TIMEOUT=1s CONDUCTOR_HEADER_TIMEOUT=1s
clients timeouts --count 20 --within 5
stop_server

step "a cap of 20 connections"
start_server "$tmp/cap" CONDUCTOR_MAX_CONNECTIONS=20
clients cap --count 20
stop_server

step "big heads, bodies, bad requests, then the descriptor limit"
start_server "$tmp/hostile"
clients headers --count 50 --rounds 4 --max-growth 4
clients bodies --count 50 --samples 100
absurd=$(value bodies absurd_length_survived)
figures+=("absurd_length_survived $absurd flag")
bound absurd_length_survived "$absurd" '==' 1
clients badreq
# Last on this server: it keeps the lowered descriptor limit until it stops.
clients emfile --nofile 64 --count 40 --hold 1 --stress 2 --within "$EMFILE_RECOVERY_MAX_S"
emfile_recovered=$(value emfile emfile_recovered_s)
figures+=("emfile_recovered_s $emfile_recovered s")
bound emfile_recovered_s "$emfile_recovered" '<=' "$EMFILE_RECOVERY_MAX_S"
stop_server

step "cardinality: $CARDINALITY_REQUESTS random requests"
start_server "$tmp/cardinality"
clients cardinality --count "$CARDINALITY_REQUESTS" --workers 4 --batch 200 --seconds 90 --bound "$SERIES_BOUND"
series_max=$(value cardinality cardinality_series_max)
figures+=("cardinality_series_max $series_max series")
bound cardinality_series_max "$series_max" '<=' "$SERIES_BOUND"
stop_server

step "an SSE storm, then subscribers that never read"
start_server "$tmp/streams"
clients ssestorm --count 12 --seconds 6 --within 5
storm_fds=$(value ssestorm sse_storm_fds_max)
storm_failed=$(value ssestorm sse_storm_healthz_failed)
stream_freed=$(value ssestorm stream_freed_s)
clients lagged --count 50 --seconds 30 --within 5
lagged_freed=$(value lagged lagged_threads_freed_s)
figures+=("sse_storm_fds_max $storm_fds fds" "sse_storm_healthz_failed $storm_failed requests"
    "stream_freed_s $stream_freed s" "lagged_threads_freed_s $lagged_freed s")
bound sse_storm_fds_max "$storm_fds" '<' "$STORM_FDS_MAX"
bound sse_storm_healthz_failed "$storm_failed" '==' 0
bound stream_freed_s "$stream_freed" '<=' "$STREAM_FREED_MAX_S"
bound lagged_threads_freed_s "$lagged_freed" '<=' "$STREAM_FREED_MAX_S"
stop_server

step "scrapes under a flood of POST /api/v1/messages, 3 rounds"
start_server "$tmp/flood"
printf '%s\n' 'wrk.method = "POST"' 'wrk.headers["Content-Type"] = "application/json"' \
    "wrk.body = '{\"type\":\"flood\",\"body\":\"hello\"}'" >"$tmp/flood.lua"
flood_p99s=()
for round in 1 2 3; do
    timeout "$WRK_DEADLINE_SECONDS" wrk -t2 -c256 -d7s --timeout 5s -s "$tmp/flood.lua" \
        "$CM_URL/api/v1/messages" >"$tmp/wrk.$round.out" &
    wrk_pid=$!
    # Let the flood reach its stride before measuring.
    sleep 1
    clients scrape --seconds 5 --pause 0.01
    wait "$wrk_pid" || die "wrk failed in round $round"
    grep -E 'Requests/sec' "$tmp/wrk.$round.out" | sed 's/^/   flood /' >&2
    flood_p99s+=("$(value scrape scrape_p99_ms)")
done
flood_p99=$(median "${flood_p99s[@]}")
figures+=("flood_metrics_p99 $flood_p99 ms")
bound flood_metrics_p99 "$flood_p99" '<' "$FLOOD_P99_MAX_MS"
stop_server

for f in "${figures[@]}"; do
    read -r name val unit <<<"$f"
    figure "$name" "$val" "$unit"
done
if ((${#failures[@]} > 0)); then
    printf 'out of bounds: %s\n' "${failures[@]}" >&2
    exit 1
fi
