#!/usr/bin/env bash
# Vendors every dependency into vendor/ so the crate builds with no registry access.
#
#   scripts/vendor.sh                  vendor, then print the Cargo config that uses vendor/
#   scripts/vendor.sh --write-config   vendor, then add that config to .cargo/config.toml
#
# Run it where the registry is reachable, copy the tree (vendor/ included) to the air-gapped
# machine, and build there with `cargo build --release --locked --offline`. vendor/ is
# git-ignored; Cargo.lock pins exactly what is vendored.
set -euo pipefail

readonly CONFIG_SNIPPET='[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "vendor"'

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

write_config=0
for arg in "$@"; do
    case $arg in
        --write-config) write_config=1 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'vendor.sh: unknown argument %s\n' "$arg" >&2; usage >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# cargo vendor prints its own config snippet on stdout; ours is fixed, so that is dropped.
cargo vendor --locked --quiet vendor/ >/dev/null
echo "vendor.sh: $(find vendor -mindepth 1 -maxdepth 1 -type d | wc -l) crates in vendor/" >&2

if ((write_config == 0)); then
    printf '# Add to .cargo/config.toml (or run scripts/vendor.sh --write-config):\n%s\n' \
        "$CONFIG_SNIPPET"
    exit 0
fi

config=.cargo/config.toml
mkdir -p .cargo
if [[ -f $config ]] && grep -q '^\[source\.vendored-sources\]' "$config"; then
    echo "vendor.sh: $config already uses vendor/" >&2
elif [[ -f $config ]] && grep -Eq '^\[source\.("crates-io"|crates-io)\]' "$config"; then
    # Another replacement is configured; merging TOML by hand could silently break it.
    echo "vendor.sh: $config already replaces crates-io; add this yourself:" >&2
    printf '%s\n' "$CONFIG_SNIPPET" >&2
    exit 1
else
    # Appended, so whatever else the file configures stays.
    { [[ -s $config ]] && echo; printf '%s\n' "$CONFIG_SNIPPET"; } >>"$config"
    echo "vendor.sh: wrote the vendored-sources config to $config" >&2
fi
