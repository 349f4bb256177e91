#!/usr/bin/env bash
# The operations kit against a real Prometheus, after the README's quick start. The alert rules
# pass promtool and their unit tests. Then the quick start runs
# as the README has it: its `serve` flags (read from the README, with a loopback port and a
# temporary data dir added) and its client commands verbatim (`demo`, `status`, `budget`, with
# CONDUCTOR_URL pointing at that server), while a Prometheus scrapes the server (job
# `conductor`, as in docs/prometheus/prometheus.yml) with the alert rules loaded. The demo's
# summary line must be the one the README shows. Then (scripts/check_dashboard.py) every panel
# query of every shipped dashboard must return data, the agent-research dashboard must have
# exactly ktrdr's panels, queries and panel types, every alert expression must parse, and every
# query of a source system on its own names (conductor-loop's, AgentGate's) must answer with the
# values of the facts they name. Every dashboard is checked even
# when one fails, so the report names every empty query. Loopback only; bounded; cleans up
# after itself.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

readonly UP_TIMEOUT=30
readonly SCRAPE_TIMEOUT=30
readonly RULES_TIMEOUT=30
# Prometheus scrapes this often. rate() and histogram_quantile() see a series move only between
# two scrapes, and the demo takes about a second: scraping several times a second lets the
# series it creates in its first runs be seen before its last runs add to them, as a scrape
# interval shorter than a workload does.
readonly SCRAPE_INTERVAL=100ms
# Seconds of scrapes to wait for after the demo, so that every series has several samples.
readonly SECONDS_AFTER_DEMO=2

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

# 2. The quick start as the README has it: its serve flags, its client commands and the demo's
# summary line, read from its first code block.
quickstart=$(python3 - README.md <<'PY'
import re, shlex, sys
text = open(sys.argv[1], encoding="utf-8").read()
block = re.search(r"^## Quick start\n+```sh\n(.*?)^```", text, re.S | re.M)
if not block:
    sys.exit("README.md: no quick start code block")
for line in block.group(1).replace("\\\n", " ").splitlines():
    words = shlex.split(line, comments=True)
    if words[-1:] == ["&"]:
        words.pop()
    if len(words) < 2 or not words[0].endswith("/conductor-metrics"):
        continue
    if words[1] == "serve":
        if any(w.split("=")[0] in ("--addr", "--data-dir") for w in words[2:]):
            sys.exit("README.md: the quick start's serve sets --addr or --data-dir; this check picks its own")
        print("serve " + " ".join(map(shlex.quote, words[2:])))
    else:
        print("run " + " ".join(map(shlex.quote, words[1:])))
summary = re.search(r"the last line sums it up:\s*`(demo: [^`]*)`", text)
if not summary:
    sys.exit("README.md: no documented demo summary line")
print("summary " + shlex.quote(summary.group(1)))
PY
)
serve_args=()
client_commands=()
documented_summary=""
while IFS= read -r line; do
    case $line in
        serve\ *) eval "serve_args=(${line#serve })" ;;
        run\ *) client_commands+=("${line#run }") ;;
        summary\ *) eval "documented_summary=${line#summary }" ;;
    esac
done <<<"$quickstart"
((${#serve_args[@]} > 0)) || die "README.md: the quick start has no serve line with flags"
[[ " ${client_commands[*]} " == *" demo "* ]] || die "README.md: the quick start runs no demo"
echo "e2e_ops: the quick start serves with: ${serve_args[*]}"

# 3. The server, and a real Prometheus scraping it with the rules loaded.
build_release
work=$(mktemp -d "${TMPDIR:-/tmp}/conductor-e2e-ops.XXXXXX")
cleanup() {
    stop_prometheus
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
start_server "$work/data" "${serve_args[@]}"
mkdir -p "$work/prom"
cp docs/prometheus/alerts.yml "$work/prom/"
cat >"$work/prom/prometheus.yml" <<YAML
global:
  scrape_interval: $SCRAPE_INTERVAL
  scrape_timeout: $SCRAPE_INTERVAL
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

# Prometheus has scraped the server before the workload, as it would a server it watches.
wait_prom 'up{job="conductor"}' "== 1" "$UP_TIMEOUT"
echo "e2e_ops: Prometheus scrapes conductor-metrics every $SCRAPE_INTERVAL (up == 1)"

# 4. The quick start's client commands, verbatim, against that server.
export CONDUCTOR_URL=$CM_URL
unset CONDUCTOR_API_KEY
for command in "${client_commands[@]}"; do
    eval "args=($command)"
    echo "e2e_ops: conductor-metrics ${args[*]}"
    if [[ ${args[0]} == demo ]]; then
        "$CM_BIN" "${args[@]}" >"$work/demo.out"
        summary=$(tail -n 1 "$work/demo.out")
        echo "$summary"
        [[ $summary == "$documented_summary" ]] ||
            die "the demo's summary is not the README's: '$summary', README: '$documented_summary'"
        demo_end=$(date +%s.%N)
    else
        "$CM_BIN" "${args[@]}" >/dev/null
    fi
done

# Prometheus has caught up once it has the server's counts of started and of finished runs (a
# run's last call finishes it), and has scraped for a while since, so every series the demo
# made has several samples.
scrape=$(curl -fsS "$CM_URL/metrics")
started=$(awk '$1 == "agent_runs_started_total" {print $2}' <<<"$scrape")
finished=$(awk '$1 ~ /^agent_cycles_total[{]/ {n += $2} END {print n + 0}' <<<"$scrape")
[[ -n $started ]] || die "the server serves no agent_runs_started_total"
wait_prom 'agent_runs_started_total{job="conductor"}' "== $started" "$SCRAPE_TIMEOUT"
wait_prom 'sum(agent_cycles_total{job="conductor"})' "== $finished" "$SCRAPE_TIMEOUT"
wait_prom "timestamp(up{job=\"conductor\"}) - $demo_end" ">= $SECONDS_AFTER_DEMO" "$SCRAPE_TIMEOUT"
echo "e2e_ops: Prometheus has $started started runs and ${SECONDS_AFTER_DEMO}s of scrapes since the demo"

# 5. The rules were loaded and evaluate without error.
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

# 6. Each source system's own queries answer, on the names it wrote, with the values of the
# facts they name: AgentGate's collector (its result for each of our outcomes; an abandoned run
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

# 7. Every panel query of every shipped dashboard has data, and every name it uses is exported;
# the agent-research dashboard is exactly ktrdr's, panel types included (its graphs may be
# timeseries); every alert parses. Every dashboard is checked
# before the verdict, so one failure does not hide another.
failed=()
for dashboard in docs/grafana/dashboards/*.json; do
    uid=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["uid"])' "$dashboard")
    extra=()
    case $uid in
        conductor-metrics)
            extra=(--alerts docs/prometheus/alerts.yml)
            ;;
        agent-research)
            extra=(
                --panel 'Cycles per Hour=rate(agent_cycles_total[1h])'
                --panel 'Cycle Outcomes=sum by (outcome) (agent_cycles_total)'
                --panel 'Average Cycle Duration=histogram_quantile(0.5, rate(agent_cycle_duration_seconds_bucket[1h]))'
                --panel 'Phase Durations=rate(agent_phase_duration_seconds_bucket[1h])'
                --panel 'Gate Pass Rate=sum(agent_gate_results_total{result="pass"}) / sum(agent_gate_results_total) * 100'
                --panel 'Token Usage=rate(agent_tokens_total[1h])'
                --panel 'Daily Budget=agent_budget_remaining_dollars'
                --panel-type 'Cycles per Hour=graph|timeseries'
                --panel-type 'Cycle Outcomes=piechart'
                --panel-type 'Average Cycle Duration=stat'
                --panel-type 'Phase Durations=heatmap'
                --panel-type 'Gate Pass Rate=gauge'
                --panel-type 'Token Usage=graph|timeseries'
                --panel-type 'Daily Budget=gauge'
            )
            ;;
    esac
    echo "e2e_ops: dashboard $uid ($dashboard)"
    python3 scripts/check_dashboard.py "$PROM_URL" "$dashboard" "${extra[@]}" || failed+=("$uid")
done
((${#failed[@]} == 0)) || die "dashboards failing: ${failed[*]}"
echo "e2e_ops: ok"
