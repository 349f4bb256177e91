# shellcheck shell=bash
# Helpers shared by scripts/*.sh: source this file, don't run it.
#
#   build_release                 cargo build --release --locked (CM_BIN, when set, names a binary
#                                 to use instead; then nothing is built)
#   start_server DATA_DIR [VAR=VALUE ...] [ARGS ...]
#                                 starts the release binary on 127.0.0.1:0; exports CM_URL, CM_PID,
#                                 CM_STDOUT and CM_STDERR (its log)
#   stop_server                   SIGTERM, then SIGKILL after 5 s; safe to call twice or from a trap
#   wait_http URL SECONDS         polls URL until it answers 2xx
#   figure NAME VALUE UNIT        prints one benchmark figure as `NAME VALUE UNIT`

CM_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CM_BIN_GIVEN=${CM_BIN:+1}
CM_BIN="${CM_BIN:-${CARGO_TARGET_DIR:-$CM_REPO_ROOT/target}/release/conductor-metrics}"
readonly CM_REPO_ROOT CM_BIN CM_BIN_GIVEN
readonly CM_STARTUP_SECONDS=10
readonly CM_LISTENING_PREFIX="conductor-metrics listening on "
# Variables the server reads; cleared so the caller's shell cannot change what a script measures.
readonly CM_SERVER_ENV=(CONDUCTOR_ADDR CONDUCTOR_DATA_DIR CONDUCTOR_WORKERS CONDUCTOR_MAX_BODY CONDUCTOR_API_KEY
    CONDUCTOR_LOG CONDUCTOR_IDLE_TIMEOUT CONDUCTOR_HEADER_TIMEOUT CONDUCTOR_WRITE_TIMEOUT CONDUCTOR_MAX_CONNECTIONS
    CONDUCTOR_METRICS_FILE)

die() {
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
    exit 1
}

need_cmd() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (scripts/install-tools.sh installs it)"
    done
}

build_release() {
    [[ -n $CM_BIN_GIVEN ]] || (cd "$CM_REPO_ROOT" && cargo build --release --locked --quiet)
}

# Leading VAR=VALUE arguments become the server's environment; the rest are extra flags.
start_server() {
    local data_dir=${1:?start_server needs a data dir}
    shift
    [[ -x $CM_BIN ]] || die "$CM_BIN not built (run build_release)"
    local env_args=() var
    for var in "${CM_SERVER_ENV[@]}"; do
        env_args+=(-u "$var")
    done
    while (($# > 0)) && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do
        env_args+=("$1")
        shift
    done
    mkdir -p "$data_dir"
    CM_LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/conductor-metrics-log.XXXXXX")
    CM_STDOUT="$CM_LOG_DIR/stdout"
    CM_STDERR="$CM_LOG_DIR/stderr"
    # Created here because the background job's own redirections may come after the first poll.
    : >"$CM_STDOUT"
    : >"$CM_STDERR"
    # env execs the binary, so $! is the server's own pid.
    env "${env_args[@]}" "$CM_BIN" serve --addr 127.0.0.1:0 --data-dir "$data_dir" "$@" \
        </dev/null >"$CM_STDOUT" 2>"$CM_STDERR" &
    CM_PID=$!
    export CM_PID CM_STDOUT CM_STDERR CM_LOG_DIR

    local deadline=$((SECONDS + CM_STARTUP_SECONDS)) line
    while :; do
        line=$(grep -m1 "^$CM_LISTENING_PREFIX" "$CM_STDOUT" || true)
        if [[ -n $line ]]; then
            CM_URL=${line#"$CM_LISTENING_PREFIX"}
            export CM_URL
            return 0
        fi
        if ! kill -0 "$CM_PID" 2>/dev/null; then
            local rc=0
            wait "$CM_PID" || rc=$?
            tail -n 20 "$CM_STDERR" >&2
            unset CM_PID
            die "server exited with status $rc before listening"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$CM_STDERR" >&2
            stop_server
            die "server printed no listening line within ${CM_STARTUP_SECONDS}s"
        fi
        sleep 0.01
    done
}

stop_server() {
    if [[ -n ${CM_PID:-} ]]; then
        if kill -TERM "$CM_PID" 2>/dev/null; then
            local deadline=$((SECONDS + 5))
            while kill -0 "$CM_PID" 2>/dev/null && ((SECONDS < deadline)); do
                sleep 0.05
            done
            kill -KILL "$CM_PID" 2>/dev/null || true
            wait "$CM_PID" 2>/dev/null || true
        else
            # It died before being asked to: show why, since the script's failure may hide it.
            local rc=0
            wait "$CM_PID" 2>/dev/null || rc=$?
            echo "server $CM_PID had already exited (status $rc); its stderr ends with:" >&2
            tail -n 20 "${CM_STDERR:-/dev/null}" >&2 || true
        fi
    fi
    if [[ -n ${CM_LOG_DIR:-} ]]; then
        rm -rf "$CM_LOG_DIR"
    fi
    unset CM_PID CM_URL CM_LOG_DIR CM_STDOUT CM_STDERR
}

wait_http() {
    local url=${1:?wait_http needs a URL} timeout=${2:-10}
    local deadline=$((SECONDS + timeout))
    until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "no answer from $url within ${timeout}s" >&2; return 1; }
        sleep 0.05
    done
}

figure() {
    printf '%s %s %s\n' "$1" "$2" "$3"
}

# check NAME VALUE OP BOUND notes a figure out of its bound (OP is <, <=, >= or ==);
# end_checks then names every one noted and fails.
bound_failures=()
check() {
    awk -v g="$2" -v op="$3" -v b="$4" 'BEGIN {
        ok = (op == "<") ? g < b : (op == "<=") ? g <= b : (op == ">=") ? g >= b : (op == "==") ? g == b : 0
        exit !ok
    }' || bound_failures+=("$1 is $2, not $3 $4")
}
end_checks() {
    if ((${#bound_failures[@]} > 0)); then
        printf 'out of bounds: %s\n' "${bound_failures[@]}" >&2
        exit 1
    fi
}

# A free loopback TCP port, picked by the kernel.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts a real Prometheus server on loopback with the given config file and
# any further flags (such as --enable-feature=exemplar-storage); exports
# PROM_URL and PROM_PID. Its data lives under the config's directory.
start_prometheus() {
    local config=${1:?start_prometheus needs a config file}
    shift
    local dir port
    dir=$(dirname "$config")
    port=$(free_port)
    prometheus --config.file="$config" --storage.tsdb.path="$dir/tsdb" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn "$@" \
        >"$dir/prometheus.log" 2>&1 </dev/null &
    PROM_PID=$!
    PROM_URL="http://127.0.0.1:$port"
    export PROM_PID PROM_URL
    if ! wait_http "$PROM_URL/-/ready" 30; then
        tail -n 20 "$dir/prometheus.log" >&2
        die "prometheus did not become ready"
    fi
}

stop_prometheus() {
    if [[ -n ${PROM_PID:-} ]]; then
        kill "$PROM_PID" 2>/dev/null || true
        wait "$PROM_PID" 2>/dev/null || true
    fi
    unset PROM_PID PROM_URL
}
