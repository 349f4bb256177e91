#!/usr/bin/env bash
# The operations kit against a real Prometheus: the alert rules pass promtool and their unit
# tests, a Prometheus scraping conductor-metrics every second (job `conductor`, as in
# docs/prometheus/prometheus.yml) loads them,
# `conductor-metrics demo --runs 30` drives a workload (with the example declared metrics
# loaded, so it also sends LLM-call and merge updates), and then (scripts/check_dashboard.py)
# every panel of both Grafana dashboards must return data, the agent-research dashboard must
# have exactly ktrdr's panels and queries, every alert expression must parse, and every query of
# a source system on its own names (conductor-loop's, AgentGate's) must answer with the values of
# the facts they name. Loopback only; bounded;
# cleans up after itself.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

readonly DEMO_RUNS=30
# Runs in the first part of the demo; the budget below admits about fifteen runs in all.
readonly DEMO_FIRST_RUNS=10
readonly UP_TIMEOUT=30
readonly SCRAPE_TIMEOUT=30
readonly RULES_TIMEOUT=30
# Scrapes each new series must have after the demo: rate() and increase() need two samples.
readonly SAMPLES_AFTER_DEMO=3

scripts/install-tools.sh prometheus promtool python >/dev/null
need_cmd prometheus promtool python3 curl

# 1. The rules and the shipped config, statically.
promtool check rules docs/prometheus/alerts.yml
(cd docs/prometheus && promtool test rules alerts.test.yml)
(cd docs/prometheus && promtool check config --syntax-only prometheus.yml)
python3 - docs/grafana/dashboards/*.json <<'PY'
import json, sys
uids = {}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        uid = json.load(f)["uid"]
    if uid in uids:
        sys.exit("dashboards %s and %s share the uid %s" % (uids[uid], path, uid))
    uids[uid] = path
print("e2e_ops: %d dashboards, uids %s" % (len(uids), ", ".join(sorted(uids))))
PY

# 2. The server and a real Prometheus scraping it, with the alert rules loaded.
build_release
work=$(mktemp -d "${TMPDIR:-/tmp}/conductor-e2e-ops.XXXXXX")
cleanup() {
    stop_prometheus
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
# A budget the demo exhausts part way, so the dashboard shows admitted and refused runs alike.
# With the example declarations the demo also sends LLM-call and merge updates for the
# dashboard's declared-metrics row.
start_server "$work/data" --daily-budget 30 --metrics-file docs/examples/orchestrator-metrics.json
mkdir -p "$work/prom"
cp docs/prometheus/alerts.yml "$work/prom/"
cat >"$work/prom/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yml
scrape_configs:
  - job_name: conductor
    metrics_path: /metrics
    static_configs: [{targets: ["${CM_URL#http://}"]}]
YAML
promtool check config "$work/prom/prometheus.yml" >/dev/null
start_prometheus "$work/prom/prometheus.yml"

# Prints the first value of an instant query, or nothing when it has no result.
prom_value() {
    curl -fsS --max-time 5 -G "$PROM_URL/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}

# Polls until the query's first value satisfies the Python comparison `v OP`, e.g. "== 1".
wait_prom() {
    local query=$1 test=$2 timeout=$3 value
    local deadline=$((SECONDS + timeout))
    while :; do
        value=$(prom_value "$query" || true)
        if [[ -n $value ]] && python3 -c "import sys; sys.exit(0 if float('$value') $test else 1)"; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            die "Prometheus: $query is '${value:-no result}', not $test, after ${timeout}s"
        fi
        sleep 0.2
    done
}

wait_prom 'up{job="conductor"}' "== 1" "$UP_TIMEOUT"
echo "e2e_ops: Prometheus scrapes conductor-metrics (up == 1)"

# 3. The workload, in two parts with Prometheus caught up in between. A series the first part
# creates is first scraped with its final value, so rate() and increase() see it move only
# once the second part adds to it; without that, quantile and ratio panels would be NaN.
# Prometheus has caught up once it has the server's counts of started and of finished runs: a
# run's last call finishes it.
caught_up() {
    local scrape finished
    scrape=$(curl -fsS "$CM_URL/metrics")
    started=$(awk '$1 == "agent_runs_started_total" {print $2}' <<<"$scrape")
    finished=$(awk '$1 ~ /^agent_cycles_total[{]/ {n += $2} END {print n + 0}' <<<"$scrape")
    [[ -n $started ]] || die "the server serves no agent_runs_started_total"
    wait_prom 'agent_runs_started_total{job="conductor"}' "== $started" "$SCRAPE_TIMEOUT"
    wait_prom 'sum(agent_cycles_total{job="conductor"})' "== $finished" "$SCRAPE_TIMEOUT"
}
"$CM_BIN" demo --url "$CM_URL" --runs "$DEMO_FIRST_RUNS" | tail -n 1
caught_up
"$CM_BIN" demo --url "$CM_URL" --runs "$((DEMO_RUNS - DEMO_FIRST_RUNS))" | tail -n 1
wait_prom 'up{job="conductor"}' "== 1" "$UP_TIMEOUT"
caught_up
# Every series the demo created has enough samples. The families are picked so that no two
# share a label set: count_over_time() drops the name, and Prometheus refuses a result with
# two series alike.
new_series='agent_(tokens|phases|gate_results|deliveries)_total|agent_(iteration|phase)_duration_seconds_bucket'
new_series+='|conductor_run_duration_seconds_bucket'
wait_prom "min(count_over_time({job=\"conductor\",__name__=~\"$new_series\"}[1m]))" \
    ">= $SAMPLES_AFTER_DEMO" "$SCRAPE_TIMEOUT"
# The same for the declared families the demo sends (no two share a label set either).
declared_series='llm_(requests|rate_limit_events|tokens|cost_dollars)_total|llm_request_duration_seconds_bucket'
declared_series+='|git_merge_total|git_merge_duration_seconds_bucket|git_active_merges'
wait_prom "min(count_over_time({job=\"conductor\",__name__=~\"$declared_series\"}[1m]))" \
    ">= $SAMPLES_AFTER_DEMO" "$SCRAPE_TIMEOUT"
wait_prom "count(count by (__name__) ({job=\"conductor\",__name__=~\"$declared_series\"}))" "== 8" "$SCRAPE_TIMEOUT"
echo "e2e_ops: Prometheus has $started started runs, ${SAMPLES_AFTER_DEMO}+ scrapes of each new series"

# 4. The rules were loaded and evaluate without error.
check_rules() {
    curl -fsS --max-time 5 "$PROM_URL/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = ["%s: %s" % (r["name"], r.get("lastError")) for r in rules if r.get("health") == "err"]
pending = [r["name"] for r in rules if r.get("health") == "unknown"]
if bad:
    print("rules failing: " + "; ".join(bad), file=sys.stderr)
    sys.exit(2)
if not rules or pending:
    sys.exit(1)
kinds = {}
for r in rules:
    kinds[r["type"]] = kinds.get(r["type"], 0) + 1
print("e2e_ops: %d rules loaded (%d alerting, %d recording), all evaluating" % (
    len(rules), kinds.get("alerting", 0), kinds.get("recording", 0)))'
}
deadline=$((SECONDS + RULES_TIMEOUT))
until check_rules; do
    (($? == 1)) || die "a rule fails to evaluate"
    ((SECONDS < deadline)) || die "the rules were not all evaluated within ${RULES_TIMEOUT}s"
    sleep 0.2
done

# 5. Each source system's own queries answer, on the names it wrote, with the values of the
# facts they name. AgentGate's collector (its result for each of our outcomes: an abandoned run
# is a failed one to AgentGate), and conductor-loop's /metrics.
for pair in succeeded:completed 'failed:failed|abandoned' canceled:cancelled; do
    wait_prom "sum(agentgate_runs_completed_total{result=\"${pair%%:*}\"}) - sum(agent_cycles_total{outcome=~\"${pair#*:}\"})" \
        "== 0" "$SCRAPE_TIMEOUT"
done
wait_prom 'sum(agentgate_run_duration_seconds_count) - sum(agent_cycle_duration_seconds_count)' "== 0" "$SCRAPE_TIMEOUT"
wait_prom 'sum(agent_cycle_duration_seconds_count) - sum(conductor_run_duration_seconds_count)' "== 0" "$SCRAPE_TIMEOUT"
wait_prom 'sum(agentgate_runs_started_total) - sum(agent_runs_started_total)' "== 0" "$SCRAPE_TIMEOUT"
wait_prom 'sum(conductor_completed_runs_total) - sum(agent_cycles_total{outcome="completed"})' "== 0" "$SCRAPE_TIMEOUT"
wait_prom 'sum(conductor_failed_runs_total) - sum(agent_cycles_total{outcome=~"failed|abandoned"})' "== 0" "$SCRAPE_TIMEOUT"
wait_prom 'sum(agent_tokens_total) - sum(conductor_tokens_total)' "== 0" "$SCRAPE_TIMEOUT"
source_queries=(
    agentgate_runs_started_total 'agentgate_runs_completed_total{result="succeeded"}'
    'agentgate_runs_completed_total{result="failed"}' 'agentgate_runs_completed_total{result="canceled"}'
    agentgate_iterations_total agentgate_active_runs
    agentgate_run_duration_seconds_sum agentgate_run_duration_seconds_count
    agentgate_iteration_duration_seconds_sum agentgate_iteration_duration_seconds_count
    'agentgate_phase_duration_seconds_sum{phase!=""}' 'agentgate_phase_duration_seconds_count{phase!=""}'
    conductor_uptime_seconds conductor_active_runs_total conductor_completed_runs_total
    conductor_failed_runs_total conductor_messagebus_appends_total
    'conductor_api_requests_total{method!="",status!=""}'
)
for query in "${source_queries[@]}"; do
    wait_prom "count($query)" ">= 1" "$SCRAPE_TIMEOUT"
done
echo "e2e_ops: ${#source_queries[@]} AgentGate and conductor-loop queries answer, equal to their sources"

# 6. Every panel of both dashboards has data and every name it uses is exported; the
# agent-research dashboard is exactly ktrdr's; every alert parses.
python3 scripts/check_dashboard.py "$PROM_URL" docs/grafana/dashboards/conductor.json \
    --alerts docs/prometheus/alerts.yml
python3 scripts/check_dashboard.py "$PROM_URL" docs/grafana/dashboards/agent-research.json \
    --panel 'Cycles per Hour=rate(agent_cycles_total[1h])' \
    --panel 'Cycle Outcomes=sum by (outcome) (agent_cycles_total)' \
    --panel 'Average Cycle Duration=histogram_quantile(0.5, rate(agent_cycle_duration_seconds_bucket[1h]))' \
    --panel 'Phase Durations=rate(agent_phase_duration_seconds_bucket[1h])' \
    --panel 'Gate Pass Rate=sum(agent_gate_results_total{result="pass"}) / sum(agent_gate_results_total) * 100' \
    --panel 'Token Usage=rate(agent_tokens_total[1h])' \
    --panel 'Daily Budget=agent_budget_remaining_dollars'
echo "e2e_ops: ok"
