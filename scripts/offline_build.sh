#!/usr/bin/env bash
# Proves the tree builds air-gapped: copies the tracked files to a temp dir, vendors the
# dependencies there (scripts/vendor.sh --write-config), then runs
# `cargo build --release --locked --offline` with CARGO_HOME pointed at an empty dir, so no
# registry index or crate cache can help, and CARGO_NET_OFFLINE=true. Where the kernel lets us
# (`unshare -n`), the build also runs with no network at all. Prints `offline_build ok` and
# the seconds it took. Leaves nothing behind.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CM_REPO_ROOT"
need_cmd git cargo

start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/conductor-offline.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/tree
mkdir -p "$tree"

# Only what git tracks: a build that needs an untracked file would fail for a user too.
git ls-files -z | while IFS= read -r -d '' file; do
    # A tracked file deleted in the working tree is not part of what is being proven.
    [[ -e $file ]] || continue
    mkdir -p "$tree/$(dirname "$file")"
    cp -p "$file" "$tree/$file"
done

bash "$tree/scripts/vendor.sh" --write-config

# The toolchain's own cargo, since the rustup proxy may look for its settings in CARGO_HOME.
cargo_bin=$(rustup which cargo 2>/dev/null || command -v cargo)
build=(env -u CARGO_TARGET_DIR -u CARGO_REGISTRIES_CRATES_IO_PROTOCOL
    CARGO_HOME="$work/cargo-home" CARGO_NET_OFFLINE=true
    "$cargo_bin" build --release --locked --offline --quiet)
mkdir -p "$work/cargo-home"
isolation="CARGO_HOME empty, CARGO_NET_OFFLINE=true"
if unshare -n true 2>/dev/null; then
    build=(unshare -n "${build[@]}")
    isolation="$isolation, no network namespace"
elif unshare -rn true 2>/dev/null; then
    build=(unshare -rn "${build[@]}")
    isolation="$isolation, no network namespace"
fi
(cd "$tree" && "${build[@]}")

bin=$tree/target/release/conductor-metrics
"$bin" --version >/dev/null || die "the offline build's binary does not run"
if [[ -n $(find "$work/cargo-home" -path '*/registry/*' -print -quit) ]]; then
    die "the offline build touched the registry under CARGO_HOME"
fi
echo "offline_build ok in $((SECONDS - start))s ($isolation)"
