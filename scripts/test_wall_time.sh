#!/usr/bin/env bash
# Measures what a newcomer waits for: clones the repository at COMMIT (default HEAD) into a temp
# dir, so the target dir starts empty, runs the test command the README of that commit gives (the
# `cargo test` line of its first code block), and prints `test_wall_seconds <n> s` with the load
# average before and after, since a busy machine makes the figure meaningless. The crates already
# in ~/.cargo are used, as they are for a developer; nothing is downloaded when they are there.
# Not part of .ci/run: it compiles everything from scratch. Leaves nothing behind.
#
#   scripts/test_wall_time.sh [COMMIT]
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"
need_cmd git cargo

commit=$(git rev-parse --verify "${1:-HEAD}^{commit}")
work=$(mktemp -d "${TMPDIR:-/tmp}/conductor-walltime.XXXXXX")
trap 'rm -rf "$work"' EXIT

git clone --quiet --no-checkout "$CM_REPO_ROOT" "$work/repo"
git -C "$work/repo" checkout --quiet --detach "$commit"

# The README's own words, so the figure is for the command a newcomer runs.
command_line=$(awk '/^```/ { if (inside) exit; inside = 1; next } inside && /^cargo test/' \
    "$work/repo/README.md" | sed 's/[[:space:]]*#.*$//')
[[ -n $command_line ]] || die "no cargo test line in the first code block of README.md at $commit"
read -r -a test_command <<<"$command_line"

printf 'commit %s\ncommand %s\nload before: %s\n' "$(git rev-parse --short "$commit")" \
    "$command_line" "$(uptime)"
start=$(date +%s.%N)
# The clone's own target dir, whatever the caller's environment says.
(cd "$work/repo" && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR "${test_command[@]}")
end=$(date +%s.%N)
printf 'load after: %s\n' "$(uptime)"
figure test_wall_seconds "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", e - s }')" s
