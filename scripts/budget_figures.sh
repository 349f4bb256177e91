#!/usr/bin/env bash
# The budget's figures (docs/budget.md, "Measured"), over loopback only. Prints one per line:
#
#   forecast_error_percent <x> %     a steady synthetic spend on the budget's ManualClock: the
#                                    worst error of the hourly forecasts against the moment the
#                                    spend then exhausts the budget, as a share of the time left
#                                    (the unit test a_steady_spend_is_forecast_within_ten_percent;
#                                    < 10)
#   overrun_auto_dollars <x> $       16 demo clients at once (`demo --runs 25 --seed K`, K = 1..16)
#   spend_share_auto <x>             against --daily-budget 100 with --run-estimate auto: the
#                                    day's spend less the limit, and the day's spend over the
#                                    limit; the median of 3 rounds, each a fresh day (spend at
#                                    most $102 and at least $85: share 0.85..1.02)
#   spend_share_auto_rounds <x> <y> <z>   each round's share, in order (printed, not bounded)
#   overrun_fixed_dollars <x> $      the same with --run-estimate 0.15, the fixed estimate of
#   spend_share_fixed <x>            before (printed for comparison, not bounded)
#   spend_share_fixed_rounds <x> <y> <z>
#
# The clients race for the last dollars, so a day's spend varies from round to round; the
# median of 3 keeps one unlucky race from deciding the figure, and the rounds show the spread.
# Exits non-zero when a figure is out of its bound. Takes well under two minutes: each round is
# bounded by ROUND_SECONDS.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

readonly CLIENTS=16
readonly RUNS=25
readonly LIMIT=100
readonly ROUND_SECONDS=30
readonly ROUNDS=3

need_cmd cargo curl python3 timeout

# The test profile, as .ci/run's `cargo test` builds it: the test is deterministic.
forecast=$(cargo test --locked --quiet --lib \
    budget::forecast::tests::a_steady_spend_is_forecast_within_ten_percent -- --exact --nocapture |
    awk '$1 == "forecast_error_percent" { print $2 }')
[[ -n $forecast ]] || die "the forecast test printed no forecast_error_percent"
figure forecast_error_percent "$forecast" %
check forecast_error_percent "$forecast" "<" 10

build_release
tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-budget.XXXXXX")
cleanup() {
    stop_server
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a server on a fresh data dir `$tmp/$2` with `--run-estimate $1`, runs the demo clients
# against it at once, and sets `spend` to the day's spend once every client is done.
day_spend() {
    local estimate=$1 day="$tmp/$2" k pids=()
    start_server "$day" --daily-budget "$LIMIT" --run-estimate "$estimate" --log-level warn
    for k in $(seq 1 "$CLIENTS"); do
        timeout "$ROUND_SECONDS" "$CM_BIN" demo --runs "$RUNS" --seed "$k" --url "$CM_URL" \
            >"$day-demo-$k.out" 2>&1 &
        pids+=($!)
    done
    for k in "${!pids[@]}"; do
        wait "${pids[$k]}" || die "demo client $((k + 1)) failed: $(tail -n 3 "$day-demo-$((k + 1)).out")"
    done
    spend=$(curl -fsS "$CM_URL/api/v1/budget" | python3 -c 'import json, sys; print(json.load(sys.stdin)["today_spend"])')
    stop_server
}

for estimate in auto 0.15; do
    name=$([[ $estimate == auto ]] && echo auto || echo fixed)
    spends=()
    for round in $(seq 1 "$ROUNDS"); do
        day_spend "$estimate" "$name-$round"
        spends+=("$spend")
    done
    median=$(printf '%s\n' "${spends[@]}" | sort -g | sed -n "$(((ROUNDS + 1) / 2))p")
    overrun=$(awk -v s="$median" -v l="$LIMIT" 'BEGIN { printf "%.2f", s - l }')
    share=$(awk -v s="$median" -v l="$LIMIT" 'BEGIN { printf "%.4f", s / l }')
    figure "overrun_${name}_dollars" "$overrun" '$'
    printf 'spend_share_%s %s\n' "$name" "$share"
    printf 'spend_share_%s_rounds' "$name"
    printf ' %s' $(printf '%s\n' "${spends[@]}" | awk -v l="$LIMIT" '{ printf "%.4f\n", $1 / l }')
    printf '\n'
    if [[ $name == auto ]]; then
        check spend_share_auto "$share" "<=" 1.02
        check spend_share_auto "$share" ">=" 0.85
    fi
done
end_checks
