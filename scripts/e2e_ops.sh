#!/usr/bin/env bash
# The operations kit against a real Prometheus: the alert rules pass promtool, a Prometheus
# scraping conductor-metrics every second (job `conductor`, as in docs/prometheus/prometheus.yml)
# loads docs/prometheus/alerts.yml, `conductor-metrics demo --runs 30` drives a workload, and
# then every Grafana dashboard panel must return series and every alert expression must parse
# (scripts/check_dashboard.py). Loopback only; bounded; cleans up after itself.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

readonly DEMO_RUNS=30
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
start_server "$work/data" --daily-budget 30
mkdir -p "$work/prom"
cp docs/prometheus/alerts.yml "$work/prom/alerts.yml"
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

# 3. The workload.
"$CM_BIN" demo --url "$CM_URL" --runs "$DEMO_RUNS" | tail -n 1
wait_prom 'up{job="conductor"}' "== 1" "$UP_TIMEOUT"
started=$(curl -fsS "$CM_URL/metrics" | awk '$1 == "conductor_runs_started_total" {print $2}')
# Prometheus has caught up with the demo, and every series the demo created has enough samples.
wait_prom 'conductor_runs_started_total{job="conductor"}' "== $started" "$SCRAPE_TIMEOUT"
wait_prom 'min(count_over_time({job="conductor",__name__=~"conductor_(tokens|phases|gate_results|deliveries)_total"}[1m]))' \
    ">= $SAMPLES_AFTER_DEMO" "$SCRAPE_TIMEOUT"
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
print("e2e_ops: %d alert rules loaded, all evaluating" % len(rules))'
}
deadline=$((SECONDS + RULES_TIMEOUT))
until check_rules; do
    (($? == 1)) || die "an alert rule fails to evaluate"
    ((SECONDS < deadline)) || die "the alert rules were not all evaluated within ${RULES_TIMEOUT}s"
    sleep 0.2
done

# 5. Every dashboard panel has data, every name it uses is exported, every alert parses.
python3 scripts/check_dashboard.py "$PROM_URL" docs/grafana/dashboards/conductor.json \
    --alerts docs/prometheus/alerts.yml
echo "e2e_ops: ok"
