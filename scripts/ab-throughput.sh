#!/usr/bin/env bash
# A/B of write throughput against an earlier commit, interleaved on this machine:
#
#   scripts/ab-throughput.sh [BASE_REV [ROUNDS]]
#
# Builds BASE_REV (default 2be8866, the last commit before issue 23's work) and this tree as
# release binaries, then runs `bench-http.sh --throughput` on each in turn, ROUNDS times
# (default 3), alternating which goes first. Prints the medians and their ratio, one figure a
# line:
#
#   ab_message_appends_base <n> acks/s, ab_message_appends_new <n> acks/s,
#   ab_message_appends_ratio <r> x    (new over base; the same for events_ingest and metric_updates)
#
# and fails when a ratio is below 0.9 (issue 23: no regression beyond 10%). Not part of .ci/run:
# it takes about four minutes; run it by hand on an otherwise idle machine.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

base_rev=${1:-2be8866}
rounds=${2:-3}
readonly NAMES=(message_appends events_ingest metric_updates)

need_cmd git cargo

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-ab.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

build_release
mkdir "$tmp/base"
git -C "$CM_REPO_ROOT" archive "$base_rev" | tar -x -C "$tmp/base"
(cd "$tmp/base" && CARGO_TARGET_DIR="$tmp/base-target" cargo build --release --locked --quiet)
base_bin="$tmp/base-target/release/conductor-metrics"

run_side() {
    local side=$1 bin=$2
    env CM_BIN="$bin" bash "$CM_REPO_ROOT/scripts/bench-http.sh" --throughput | sed "s/^/$side /" >>"$tmp/figures"
}

for round in $(seq "$rounds"); do
    if ((round % 2)); then
        run_side base "$base_bin"
        run_side new "$CM_BIN"
    else
        run_side new "$CM_BIN"
        run_side base "$base_bin"
    fi
done

for name in "${NAMES[@]}"; do
    for side in base new; do
        values=$(awk -v s="$side" -v n="$name" '$1 == s && $2 == n { print $3 }' "$tmp/figures" | sort -n | tr '\n' ' ')
        printf '%s %s rounds: %s\n' "$name" "$side" "$values" >&2
        median=$(tr ' ' '\n' <<<"$values" | awk 'NF { v[++k] = $1 } END { print v[int((k + 1) / 2)] }')
        printf -v "median_$side" '%s' "$median"
    done
    unit=$(awk -v n="$name" '$2 == n { print $4; exit }' "$tmp/figures")
    ratio=$(awk -v a="$median_new" -v b="$median_base" 'BEGIN { printf "%.3f", a / b }')
    figure "ab_${name}_base" "$median_base" "$unit"
    figure "ab_${name}_new" "$median_new" "$unit"
    figure "ab_${name}_ratio" "$ratio" x
    check "ab_${name}_ratio" "$ratio" '>=' 0.9
done
end_checks
