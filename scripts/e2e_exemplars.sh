#!/usr/bin/env bash
# Exemplars end to end: runs sent with a W3C traceparent (and one without) reach a real
# Prometheus with --enable-feature=exemplar-storage, scraping OpenMetrics, as exemplars that
# name each run and its trace: /api/v1/query_exemplars returns a sent trace id for the cycle
# duration buckets, the phase duration buckets and the finished-cycle counter. The exposition
# passes Python's strict OpenMetrics parser with those exemplars in it. Loopback only; every
# wait is bounded.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

readonly RUNS=6
readonly PROM_WAIT_SECONDS=60

scripts/install-tools.sh prometheus python >/dev/null
need_cmd prometheus python3 curl
build_release
data=$(mktemp -d "${TMPDIR:-/tmp}/conductor-exemplars.XXXXXX")
cleanup() {
    stop_prometheus
    stop_server
    rm -rf "$data"
}
trap cleanup EXIT

# A budget no run here comes near, so every run is admitted.
start_server "$data/server" AGENT_DAILY_BUDGET=10000
mkdir -p "$data/prom"
cat >"$data/prom/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: conductor
    static_configs: [{targets: ["${CM_URL#http://}"]}]
YAML
start_prometheus "$data/prom/prometheus.yml" --enable-feature=exemplar-storage

# Runs as an orchestrator sends them, each in its own trace, while Prometheus scrapes: a
# phase of i seconds, and the run's end with its own measure of i * 1.5 seconds. The last one
# fails and has no traceparent, so its exemplars (the latest in their buckets) carry its run id
# alone, and the completed runs' counter keeps a traced one.
sent=()
for i in $(seq 1 "$RUNS"); do
    run_id="exemplar-run-$i"
    trace_id=""
    headers=()
    result=failed
    if ((i < RUNS)); then
        result=succeeded
        trace_id=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
        headers=(-H "traceparent: 00-$trace_id-00f067aa0ba902b7-01")
    fi
    curl -fsS -o /dev/null "${headers[@]}" -X POST "$CM_URL/api/v1/runs" -d "{\"run_id\":\"$run_id\"}"
    curl -fsS -o /dev/null -X POST "$CM_URL/api/v1/runs/$run_id/events" -d "[
      {\"type\":\"phase_started\",\"phase\":\"design\"},
      {\"type\":\"phase_completed\",\"phase\":\"design\",\"success\":true,\"duration_ms\":$((i * 1000))},
      {\"type\":\"run_completed\",\"result\":\"$result\",\"durationMs\":$((i * 1500))}]"
    sent+=(--run "$run_id=$trace_id")
    echo "e2e_exemplars: sent $run_id trace_id=${trace_id:-none}"
done

# The exposition as Prometheus is served it, through the strict OpenMetrics parser.
python3 scripts/check_exposition.py "$CM_URL/metrics" --openmetrics \
    --expect-exemplar agent_cycle_duration_seconds=trace_id \
    --expect-exemplar agent_phase_duration_seconds=trace_id \
    --expect-exemplar agent_cycles_total=trace_id \
    --expect-exemplar agentgate_run_duration_seconds=trace_id \
    --expect-exemplar conductor_run_duration_seconds=trace_id \
    --expect-exemplar agent_cycle_duration_seconds=run_id

for query in agent_cycle_duration_seconds_bucket agent_phase_duration_seconds_bucket \
    agent_cycles_total agentgate_run_duration_seconds_bucket; do
    python3 scripts/prom_exemplars.py "$PROM_URL" --query "$query" --timeout "$PROM_WAIT_SECONDS" \
        "${sent[@]}"
done
echo "e2e_exemplars: ok"
