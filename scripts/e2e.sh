#!/usr/bin/env bash
# End-to-end checks against real clients: promtool and Python's
# prometheus_client parsers on the registry's hostile-label output, on a
# live server's scrape in both formats, and on declared metrics sent by the
# example Python client. Loopback only; stops by itself.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

scripts/install-tools.sh promtool python >/dev/null

# 1. The registry's hostile-label samples, written by the exposition tests.
samples=${CARGO_TARGET_DIR:-target}/tmp/exposition
if [[ ! -s $samples/hostile.prom ]]; then
    cargo test --locked --quiet --test exposition writes_samples_for_external_parsers >/dev/null
fi
scripts/promtool-check.sh "$samples/hostile.prom"
python3 scripts/check_exposition_samples.py "$samples"

# 2. A live server: traffic, then its scrape through both parsers and promtool.
build_release
data=$(mktemp -d "${TMPDIR:-/tmp}/conductor-e2e.XXXXXX")
cleanup() {
    stop_prometheus
    stop_server
    rm -rf "$data"
}
trap cleanup EXIT
start_server "$data"

# The first scrape, before any run, as ktrdr's verification script and Python's
# prometheus_client see it: every family is announced (HELP and TYPE) though it has no series
# yet, the known outcomes start at 0, and both parsers and promtool accept that.
first=$(curl -fsS "$CM_URL/metrics")
for line in '# TYPE agent_cycles_total counter' '# TYPE agent_phase_duration_seconds histogram' \
    '# TYPE agent_gate_results_total counter' '# TYPE agent_tokens_total counter' \
    'agent_cycles_total{outcome="completed"} 0' 'agent_cycles_total{outcome="failed"} 0' \
    'agent_cycles_total{outcome="cancelled"} 0'; do
    grep -qxF "$line" <<<"$first" || die "the first scrape has no line: $line"
done
scripts/promtool-check.sh "$CM_URL/metrics"
first_expect=(--expect agent_cycles_total --expect agent_phase_duration_seconds
    --expect agent_gate_results_total --expect agent_tokens_total)
python3 scripts/check_exposition.py "$CM_URL/metrics" "${first_expect[@]}"
python3 scripts/check_exposition.py "$CM_URL/metrics" --openmetrics "${first_expect[@]}"

run=$(curl -fsS -X POST "$CM_URL/api/v1/runs" -d '{"agent":"e2e"}')
run_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])' <<<"$run")
curl -fsS -X POST "$CM_URL/api/v1/runs/$run_id/events" -d '[
  {"type":"iteration_started","iteration":1},
  {"type":"phase_started","phase":"implement"},
  {"type":"tokens","phase":"implement","model":"m1","input_tokens":900,"output_tokens":120},
  {"type":"phase_completed","phase":"implement","success":true,"duration_ms":2500},
  {"type":"gate_checked","gate":"tests","passed":true},
  {"type":"iteration_completed","iteration":1,"success":true},
  {"type":"delivery_started"},
  {"type":"delivery_completed","success":true}]' >/dev/null
curl -fsS -X POST "$CM_URL/api/v1/runs/$run_id/complete" >/dev/null
curl -fsS -X POST "$CM_URL/api/v1/messages" -d '{"type":"note","body":"hello"}' >/dev/null
# JSON nested to serde_json's limit and past it is answered on a connection thread of the
# shipped binary's size (`cargo test` runs a debug build, whose threads are given more stack).
for depth in 127 128 100000; do
    nested=$(python3 -c "import sys; d = int(sys.argv[1]); print('{\"type\":\"t\",\"body\":' + '[' * d + ']' * d + '}')" "$depth")
    status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$CM_URL/api/v1/messages" --data-binary @- <<<"$nested")
    [[ $status == 400 ]] || die "a body nested $depth deep was answered $status, not 400"
done
curl -fsS -o /dev/null "$CM_URL/healthz" || die "the server is gone after deeply nested bodies"
curl -sS -o /dev/null -X DELETE "$CM_URL/metrics"
curl -sS -o /dev/null "$CM_URL/no/such/route"

scripts/promtool-check.sh "$CM_URL/metrics"
# Names this server once served and no source system has: none is left.
retired='conductor_(cancelled_runs_total|iterations_total|iteration_duration_seconds'
retired+='|phase_duration_seconds|phases_total|gate_results_total|deliveries_total|budget_|cost_)'
scrape=$(curl -fsS "$CM_URL/metrics")
if old=$(grep -E "^(# (HELP|TYPE) )?${retired}" <<<"$scrape"); then
    die "still served under a retired name: $(head -n 3 <<<"$old")"
fi
# Every source system's names, as it wrote them (docs/api-reference.md, "Source names"):
# conductor-loop's six families, AgentGate's collector, and the research agent's agent_*.
expect=(conductor_uptime_seconds conductor_active_runs_total conductor_completed_runs_total
    conductor_failed_runs_total conductor_messagebus_appends_total conductor_api_requests_total
    agentgate_runs_started_total agentgate_runs_completed_total agentgate_iterations_total
    agentgate_active_runs agentgate_run_duration_seconds agentgate_iteration_duration_seconds
    agentgate_phase_duration_seconds conductor_run_duration_seconds conductor_tokens_total
    conductor_active_runs conductor_build_info process_cpu_seconds_total
    process_resident_memory_bytes process_virtual_memory_bytes process_open_fds process_max_fds
    process_start_time_seconds process_threads agent_runs_started_total agent_cycles_total
    agent_cycle_duration_seconds agent_iterations_total agent_iteration_duration_seconds
    agent_phase_duration_seconds agent_phases_total agent_gate_results_total
    agent_tokens_total agent_deliveries_total agent_budget_limit_dollars
    agent_budget_today_spend_dollars agent_budget_reserved_dollars agent_budget_remaining_dollars
    agent_budget_reset_timestamp_seconds agent_budget_spend_total agent_budget_rejections_total
    agent_cost_dollars_total)
expect_args=()
for name in "${expect[@]}"; do
    expect_args+=(--expect "$name")
done
python3 scripts/check_exposition.py "$CM_URL/metrics" "${expect_args[@]}"
python3 scripts/check_exposition.py "$CM_URL/metrics" --openmetrics "${expect_args[@]}"

# 3. A real Prometheus scraping the same server in both formats stores the same series.
scripts/install-tools.sh prometheus >/dev/null
target=${CM_URL#http://}
mkdir -p "$data/prom"
cat >"$data/prom/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: openmetrics
    static_configs: [{targets: ["$target"]}]
  - job_name: text
    params: {format: [text]}
    static_configs: [{targets: ["$target"]}]
YAML
start_prometheus "$data/prom/prometheus.yml"
python3 scripts/prom_compare_formats.py "$PROM_URL" --timeout 60
stop_prometheus
stop_server

# 4. Declared metrics: the example client (docs/examples/conductor_client.py) plays merges, a
# retried task and a rate-limited LLM call against the example declarations; the series are
# exact in both parsers and clean in promtool, and a restart on the same data dir keeps every
# counter and histogram exactly and every gauge at its last value.
declared=(--metrics-file docs/examples/orchestrator-metrics.json)
start_server "$data/declared" "${declared[@]}"
python3 scripts/check_declared.py "$CM_URL" --play --save "$data/declared.json"
scripts/promtool-check.sh "$CM_URL/metrics"
stop_server
start_server "$data/declared" "${declared[@]}"
python3 scripts/check_declared.py "$CM_URL" --same-as "$data/declared.json"
stop_server

# 5. Traces: a run exported to a strict OTLP/HTTP JSON receiver.
python3 scripts/otlp_receiver.py --port 0 --out "$data/spans.jsonl" --max-seconds 120 \
    >"$data/receiver.out" 2>"$data/receiver.err" &
receiver=$!
port=""
for _ in $(seq 1 100); do
    # The background job opens the file only once it has forked: it may not be there yet.
    port=$(awk '/^listening/ { print $2 }' "$data/receiver.out" 2>/dev/null || true)
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || die "the OTLP receiver did not start: $(cat "$data/receiver.err")"
# A budget no demo here comes near, so every demo run is admitted and traced.
start_server "$data/traced" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" \
    OTEL_SERVICE_NAME=conductor-e2e OTEL_BSP_SCHEDULE_DELAY=100 AGENT_DAILY_BUDGET=10000
trace_id=4bf92f3577b34da6a3ce929d0e0e4736
parent=00f067aa0ba902b7
curl -fsS -X POST "$CM_URL/api/v1/runs" -H "traceparent: 00-$trace_id-$parent-01" \
    -d '{"run_id":"traced-1","work_order_id":"wo-e2e","strategy":"momentum-v2"}' >/dev/null
# The run as `demo` reports one: its events carry the emitter's clock, an hour before the
# server's, so only a run span taken from its events can hold its phases. Two iterations of
# `code`, each with its own tokens (iteration 2's arrive before its span begins and after it
# ends), and a gate with a reason in three phases, so each check has something to bite on.
# `designing` and `training` as the research agent reports them: the design tokens under its
# short name `design`, the training accuracy in the metadata of the phase's end.
t=$(($(date +%s) - 3600))
curl -fsS -X POST "$CM_URL/api/v1/runs/traced-1/events" --data-binary @- >/dev/null <<JSON
[
  {"type":"gate_checked","gate":"preflight","passed":true,"timestamp":$t},
  {"type":"iteration_started","iteration":1,"timestamp":$((t + 1))},
  {"type":"phase_started","phase":"designing","timestamp":$((t + 2))},
  {"type":"tokens","phase":"design","model":"claude-x","input_tokens":1200,"output_tokens":300,"timestamp":$((t + 3))},
  {"type":"gate_checked","gate":"lint","passed":false,"reason":"3 errors","timestamp":$((t + 4))},
  {"type":"phase_completed","phase":"designing","success":true,"duration_ms":1500,"timestamp":$((t + 5))},
  {"type":"phase_started","phase":"code","timestamp":$((t + 6))},
  {"type":"tokens","phase":"code","model":"claude-x","input_tokens":400,"output_tokens":40,"timestamp":$((t + 7))},
  {"type":"phase_completed","phase":"code","success":false,"timestamp":$((t + 8))},
  {"type":"iteration_completed","iteration":1,"success":false,"timestamp":$((t + 9))},
  {"type":"iteration_started","iteration":2,"timestamp":$((t + 10))},
  {"type":"tokens","phase":"code","model":"claude-x","input_tokens":500,"output_tokens":50,"timestamp":$((t + 11))},
  {"type":"phase_started","phase":"code","timestamp":$((t + 12))},
  {"type":"gate_checked","gate":"tests","passed":true,"reason":"42 passed","timestamp":$((t + 13))},
  {"type":"phase_completed","phase":"code","success":true,"timestamp":$((t + 14))},
  {"type":"tokens","phase":"code","model":"claude-x","input_tokens":600,"output_tokens":60,"timestamp":$((t + 15))},
  {"type":"phase_started","phase":"training","timestamp":$((t + 16))},
  {"type":"gate_checked","gate":"training","passed":false,"reason":"accuracy below 0.45","timestamp":$((t + 17))},
  {"type":"phase_completed","phase":"training","success":false,"metadata":{"accuracy":0.41,"final_loss":0.7},"timestamp":$((t + 18))}]
JSON
curl -fsS -X POST "$CM_URL/api/v1/runs/traced-1/fail" -d '{"error":"tests failed"}' >/dev/null
trace_rc=0
python3 scripts/check_traces.py "$data/spans.jsonl" traced-1 "$trace_id" "$parent" --timeout 30 || trace_rc=$?
# `demo` reports past timestamps, as the run above does, over 30 runs of every outcome.
if ((trace_rc == 0)); then
    "$CM_BIN" demo --url "$CM_URL" --runs 30 >/dev/null
    python3 scripts/check_traces.py "$data/spans.jsonl" --demo-runs 30 --timeout 30 || trace_rc=$?
fi
kill "$receiver" 2>/dev/null || true
wait "$receiver" 2>/dev/null || true
((trace_rc == 0)) || die "trace check failed"
stop_server

# 6. Live progress: a real WebSocket client, SSE latency, 500 subscribers, and the page in
# headless Chromium.
scripts/install-tools.sh chromium >/dev/null
start_server "$data/live"
python3 scripts/check_streams.py "$CM_URL" --subscribers 500 --trials 20
stop_server

# 7. The live page's pictures and layout in headless Chromium, on a server that wants a key:
# the key hint, runs per minute by outcome, and no sideways scroll at 420 px; screenshots at
# 420 and 1,400 px go to a temp dir that is kept, and their paths are printed. The budget is
# one the check's runs and spends stay well under, so it can hold a reservation.
start_server "$data/page" CONDUCTOR_API_KEY=e2e-page-key AGENT_DAILY_BUDGET=50
python3 scripts/check_page.py "$CM_URL" --api-key e2e-page-key
echo "e2e: ok"
