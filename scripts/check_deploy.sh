#!/usr/bin/env bash
# Checks the deployment files in docs/deploy/: the systemd unit passes `systemd-analyze verify`
# (where systemd-analyze exists; it is skipped with a note elsewhere), with its ExecStart pointed
# at the binary just built, since verify insists the program exists; and the unit keeps the
# settings docs/operations.md promises. The container file is documented, not built here.
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
