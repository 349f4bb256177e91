#!/usr/bin/env bash
# Memory under slow readers. Answers are written as they are made, so a client that reads slowly
# holds a piece of its answer in the server, not all of it. Prints and checks, from RssAnon in
# /proc/PID/status of the release server:
#
#   slow_readers_metrics_mib <n> MiB   growth while 16 slow readers (4 KiB receive buffer, 4 KiB
#                                      read every 5 s) hold GET /metrics for 20 s, at 16 MB of
#                                      built-in series (phase names from run events)    (<= 32)
#   slow_readers_messages_mib <n> MiB  the same over GET /api/v1/messages?limit=1000 of 1000
#                                      messages of 60 KB                                (<= 32)
#   scrape_extra_over_answer <r> ratio peak growth during one scrape of that /metrics, read as
#                                      fast as it comes, over the answer's size; the second
#                                      scrape, since a first one makes what the registry keeps
#                                      for later ones (both are on stderr)            (<= 0.25)
#
# The servers run with --write-timeout 600s, so that no reader is dropped while it is measured.
# Loopback only; the whole script takes about a minute and stops by itself.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly CLIENTS="$CM_REPO_ROOT/scripts/slow_readers.py"
readonly METRICS_BYTES=$((16 * 1000 * 1000))
readonly MESSAGES=1000
readonly MESSAGE_BYTES=60000

need_cmd cargo python3 timeout

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-slow-readers.XXXXXX")
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

build_release

# The runs that make the series report tokens, which the budget prices: room for all of them.
start_server "$tmp/metrics" --write-timeout 600s --daily-budget 1000000
timeout 120 python3 "$CLIENTS" fill-metrics "$CM_URL" "$METRICS_BYTES"
scrape_ratio=$(timeout 60 python3 "$CLIENTS" scrape "$CM_URL" "$CM_PID" | awk '{ print $2 }')
metrics_mib=$(timeout 60 python3 "$CLIENTS" hold "$CM_URL" /metrics "$CM_PID" slow_readers_metrics_mib |
    awk '{ print $2 }')
stop_server

start_server "$tmp/messages" --write-timeout 600s
timeout 120 python3 "$CLIENTS" fill-messages "$CM_URL" "$MESSAGES" "$MESSAGE_BYTES"
messages_mib=$(timeout 60 python3 "$CLIENTS" hold "$CM_URL" "/api/v1/messages?limit=$MESSAGES" "$CM_PID" \
    slow_readers_messages_mib | awk '{ print $2 }')
stop_server

figure slow_readers_metrics_mib "$metrics_mib" MiB
figure slow_readers_messages_mib "$messages_mib" MiB
figure scrape_extra_over_answer "$scrape_ratio" ratio
check slow_readers_metrics_mib "$metrics_mib" '<=' 32
check slow_readers_messages_mib "$messages_mib" '<=' 32
check scrape_extra_over_answer "$scrape_ratio" '<=' 0.25
end_checks
