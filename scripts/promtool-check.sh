#!/usr/bin/env bash
# Lints a scrape with `promtool check metrics` and fails on any finding but one (below).
#
#   scripts/promtool-check.sh URL_OR_FILE
#
# promtool exits 0 on mere lint warnings in some versions, so any output at all counts as failure.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 1)) || die "usage: $0 URL_OR_FILE"
source=$1
need_cmd promtool

tmp=$(mktemp -d "${TMPDIR:-/tmp}/conductor-promtool.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ $source == http://* || $source == https://* ]]; then
    need_cmd curl
    curl -fsS --max-time 10 -o "$tmp/scrape" "$source" || die "cannot fetch $source"
else
    cp -- "$source" "$tmp/scrape"
fi
[[ -s $tmp/scrape ]] || die "$source: empty exposition"

# The one finding taken: conductor-loop's own name for a gauge, served verbatim because its
# clients query it (docs/api-reference.md, "Source names"). When the scrape serves that gauge,
# promtool must report exactly that complaint (exit 3) and nothing else.
readonly SOURCE_GAUGE=conductor_active_runs_total
expected_rc=0
: >"$tmp/expected"
if grep -qx "# TYPE $SOURCE_GAUGE gauge" "$tmp/scrape"; then
    expected_rc=3
    printf '%s non-counter metrics should not have "_total" suffix\n' "$SOURCE_GAUGE" >"$tmp/expected"
fi
rc=0
promtool check metrics <"$tmp/scrape" >"$tmp/out" 2>&1 || rc=$?
if ((rc != expected_rc)) || ! diff -u "$tmp/expected" "$tmp/out"; then
    cat "$tmp/out"
    die "promtool check metrics found problems in $source (exit $rc, expected $expected_rc)"
fi
if ((expected_rc != 0)); then
    echo "promtool: $(grep -c '^# TYPE ' "$tmp/scrape") families, the one expected complaint ($SOURCE_GAUGE)"
else
    echo "promtool: $(grep -c '^# TYPE ' "$tmp/scrape") families clean"
fi
