#!/usr/bin/env bash
# Lints a scrape with `promtool check metrics` and fails on any finding.
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

rc=0
promtool check metrics <"$tmp/scrape" >"$tmp/out" 2>&1 || rc=$?
cat "$tmp/out"
if ((rc != 0)) || [[ -s $tmp/out ]]; then
    die "promtool check metrics found problems in $source (exit $rc)"
fi
echo "promtool: $(grep -c '^# TYPE ' "$tmp/scrape") families clean"
