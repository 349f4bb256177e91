#!/usr/bin/env bash
# Installs the tools the checks need, and only those missing, so it is cheap to run every time.
#
#   scripts/install-tools.sh [promtool|prometheus|python|wrk|chromium ...]
#
# No argument means the CI set: promtool prometheus python wrk. Prints one line per tool.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
# Another process (a developer's shell, a previous step) may hold the dpkg lock for a while.
readonly LOCK_WAIT_SECONDS=600
readonly PIP_MODULES=(prometheus_client websockets opentelemetry.proto google.protobuf)
readonly PIP_PACKAGES=(prometheus_client websockets opentelemetry-proto protobuf)

apt_updated=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

die() {
    printf 'install-tools: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

# True while an apt or dpkg process runs; read from /proc so no extra tool is needed.
apt_busy() {
    local comm
    for comm in /proc/[0-9]*/comm; do
        case $(cat "$comm" 2>/dev/null) in
            apt | apt-get | aptitude | dpkg | unattended-upgr) return 0 ;;
        esac
    done
    return 1
}

wait_for_apt() {
    local deadline=$((SECONDS + LOCK_WAIT_SECONDS)) said=0
    while apt_busy; do
        if ((said == 0)); then
            echo "install-tools: waiting for another apt/dpkg run to finish" >&2
            said=1
        fi
        ((SECONDS < deadline)) || die "apt/dpkg still busy after ${LOCK_WAIT_SECONDS}s"
        sleep 1
    done
}

apt_get() {
    wait_for_apt
    as_root apt-get -q -o DPkg::Lock::Timeout="$LOCK_WAIT_SECONDS" "$@" >>"$log" 2>&1
}

# Installs Debian packages; the package lists are refreshed once, and only if an install fails.
apt_install() {
    if apt_get install -y --no-install-recommends "$@"; then
        return 0
    fi
    if ((apt_updated == 0)); then
        apt_updated=1
        apt_get update || { tail -n 20 "$log" >&2; die "apt-get update failed"; }
        apt_get install -y --no-install-recommends "$@" && return 0
    fi
    tail -n 20 "$log" >&2
    die "apt-get install $* failed"
}

# Ensures each command exists, installing the package if any is missing.
ensure_commands() {
    local name=$1 package=$2
    shift 2
    local cmd missing=0
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    if ((missing == 0)); then
        echo "$name: present"
        return 0
    fi
    # `package` may name several packages, separated by spaces.
    # shellcheck disable=SC2086
    apt_install $package
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "$name: $cmd still missing after installing $package"
    done
    echo "$name: installed ($package)"
}

ensure_python() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    local i missing=()
    for i in "${!PIP_MODULES[@]}"; do
        python3 -c "import ${PIP_MODULES[$i]}" >/dev/null 2>&1 || missing+=("${PIP_PACKAGES[$i]}")
    done
    if ((${#missing[@]} == 0)); then
        echo "python: present"
        return 0
    fi
    local pip=(python3 -m pip install -q --disable-pip-version-check)
    if ! PIP_ROOT_USER_ACTION=ignore "${pip[@]}" "${missing[@]}" >>"$log" 2>&1; then
        # Debian's own python refuses pip installs (PEP 668); a throwaway machine may override.
        PIP_ROOT_USER_ACTION=ignore "${pip[@]}" --break-system-packages "${missing[@]}" >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "pip install ${missing[*]} failed"; }
    fi
    for i in "${!PIP_MODULES[@]}"; do
        python3 -c "import ${PIP_MODULES[$i]}" >/dev/null 2>&1 ||
            die "python: ${PIP_MODULES[$i]} still not importable"
    done
    echo "python: installed (${missing[*]})"
}

main() {
    local tools=("$@")
    ((${#tools[@]} > 0)) || tools=(promtool prometheus python wrk)
    local tool
    for tool in "${tools[@]}"; do
        case $tool in
            promtool) ensure_commands promtool prometheus promtool ;;
            prometheus) ensure_commands prometheus prometheus prometheus ;;
            wrk) ensure_commands wrk wrk wrk ;;
            chromium) ensure_commands chromium "chromium chromium-driver" chromium chromedriver ;;
            python) ensure_python ;;
            *) die "unknown tool '$tool' (known: promtool prometheus python wrk chromium)" ;;
        esac
    done
}

main "$@"
