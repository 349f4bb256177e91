#!/usr/bin/env bash
# Checks the deployment files in docs/deploy/: the systemd unit passes `systemd-analyze verify`
# (where systemd-analyze exists; it is skipped with a note elsewhere), with its ExecStart pointed
# at the binary just built, since verify insists the program exists; and the unit keeps the
# settings docs/operations.md promises. The container file is documented, not built here; its
# .dockerignore is checked against what the build needs.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"

readonly UNIT=docs/deploy/conductor-metrics.service

for setting in 'LimitNOFILE=' 'Restart=on-failure' 'KillSignal=SIGTERM' 'StateDirectory=conductor-metrics' \
    'ExecStart=/usr/local/bin/conductor-metrics serve --data-dir ${STATE_DIRECTORY}'; do
    grep -qF "$setting" "$UNIT" || die "$UNIT: no $setting"
done
grep -qF 'STOPSIGNAL SIGTERM' docs/deploy/Containerfile || die "Containerfile: no STOPSIGNAL SIGTERM"
# The container file is built with the repository root as its context, where Docker and Podman
# read .dockerignore: it keeps out what a build does not need, and none of what it does.
grep -qF 'docker build -f docs/deploy/Containerfile -t conductor-metrics .' docs/deploy/Containerfile ||
    die "Containerfile: its build command no longer uses the repository root as the context"
for left_out in .git target data vendor .cargo; do
    grep -qxF "$left_out" .dockerignore || die ".dockerignore: $left_out is sent to the build"
done
for needed in Cargo.toml Cargo.lock src benches; do
    if grep -v '^#' .dockerignore | grep -qE "^(/)?$needed(/.*)?$|^\*"; then
        die ".dockerignore: $needed, which the build needs, is left out"
    fi
done

if ! command -v systemd-analyze >/dev/null; then
    echo "check_deploy: systemd-analyze is not installed; the unit was not verified"
    exit 0
fi
build_release
work=$(mktemp -d "${TMPDIR:-/tmp}/conductor-deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/conductor-metrics|$CM_BIN|" "$UNIT" >"$work/conductor-metrics.service"
if ! out=$(systemd-analyze verify "$work/conductor-metrics.service" 2>&1); then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify refused $UNIT"
fi
# verify exits 0 on some warnings (an unknown setting, say): any line about our unit fails.
if grep -F 'conductor-metrics.service' <<<"$out" >&2; then
    die "systemd-analyze verify warned about $UNIT"
fi
echo "check_deploy: $UNIT verified by $(systemd-analyze --version | head -1)"
