#!/usr/bin/env bash
# Checks the figures the docs quote against the release binary, so that they cannot drift: the
# idle server's threads, the binary's size and the series-bound table (scripts/check_doc_figures.py
# says which sentences it reads). Starts a fresh server on a temp dir, answers one /healthz, counts
# its threads once they settle and saves its first scrape; then completes one run and appends one
# message, and saves a second. Prints every figure, quoted and actual; fails on any mismatch.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"
need_cmd curl python3

# How long the threads of one request's connection may take to go.
readonly SETTLE_SECONDS=5

build_release
work=$(mktemp -d "${TMPDIR:-/tmp}/conductor-doc-figures.XXXXXX")
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
start_server "$work/data"

curl -fsS -o /dev/null "$CM_URL/healthz"
# The connection thread of that request ends once curl has closed it: wait for the count to stop
# falling, as the docs mean an idle server.
threads() { awk '$1 == "Threads:" { print $2 }' "/proc/$CM_PID/status"; }
deadline=$((SECONDS + SETTLE_SECONDS))
idle=$(threads)
while ((SECONDS < deadline)); do
    sleep 0.2
    now=$(threads)
    [[ $now == "$idle" ]] && break
    idle=$now
done
curl -fsS "$CM_URL/metrics?format=text" >"$work/fresh.prom"

curl -fsS -o /dev/null -X POST "$CM_URL/api/v1/runs" -d '{"run_id":"doc-figures"}'
curl -fsS -o /dev/null -X POST "$CM_URL/api/v1/runs/doc-figures/complete" -d '{}'
curl -fsS -o /dev/null -X POST "$CM_URL/api/v1/messages" -d '{"type":"note","body":"figures"}'
curl -fsS "$CM_URL/metrics?format=text" >"$work/busy.prom"

python3 scripts/check_doc_figures.py --threads "$idle" --binary "$(stat -c %s "$CM_BIN")" \
    --fresh "$work/fresh.prom" --busy "$work/busy.prom"
