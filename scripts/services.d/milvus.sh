# shellcheck shell=bash
# Milvus standalone for scripts/services.sh (sourced by it: uses its step,
# die, quiet and env_set helpers; defines svc_milvus_up/down/status).
#
# The server is the real Milvus 2.3.5 (Go + C++, embedded etcd, local
# storage, RocksMQ) that ships inside the PyPI package `milvus==2.3.5`. It is
# installed into a virtualenv and its bundled binary is run directly (not
# through the package's `milvus-server` helper, which probes for free ports
# and advertises the machine's external address):
#
#   $MILVUS_VENV   /opt/vectorgate/milvus-venv    python3 -m venv + pip install milvus==2.3.5
#   $MILVUS_BASE   /opt/vectorgate/milvus
#     bin/         the unpacked binary and its libraries (~250 MB)
#     configs/     milvus.yaml (from the package's own config helper), etcd.yaml
#     data/        etcd, RocksMQ and segment data
#     logs/        milvus.log (stdout + stderr of the server)
#     milvus.pid
#
# Ports, all fixed: proxy (the client port) 19530, rootCoord 19532, proxy
# internal 19533, queryCoord 19534, queryNode 19535, metrics + /healthz 19536,
# indexNode 19537, dataCoord 19538, dataNode 19539. Every component
# advertises and dials 127.0.0.1. (Milvus 2.3.5 binds its gRPC listeners on
# all interfaces and has no setting to narrow that; only 127.0.0.1 is ever
# advertised or used.) The embedded etcd listens on unix sockets in
# $MILVUS_BASE, not on 2379/2380.
#
# Data: `up` keeps whatever the data directory holds, so restarting after a
# crash or a SIGKILL (the chaos tests do that) finds the collections written
# before it. The first `up` on a machine starts from an empty data directory;
# `VECTORGATE_MILVUS_FRESH=1 scripts/services.sh up milvus` wipes it first
# (the server is stopped for that). Tests use unique collection names and
# drop them, so they do not depend on a fresh directory.
#
# Stopping: Milvus 2.3.5 does not finish a SIGTERM shutdown; `down` sends
# SIGTERM, waits up to 5 s, then SIGKILLs. `up` recovers from a killed
# server (stale pid file, stale etcd sockets).
#
# `up` writes VECTORGATE_TEST_MILVUS_URL=http://127.0.0.1:19530.

MILVUS_VERSION=2.3.5
MILVUS_VENV=${VECTORGATE_MILVUS_VENV:-/opt/vectorgate/milvus-venv}
MILVUS_BASE=${VECTORGATE_MILVUS_BASE:-/opt/vectorgate/milvus}
MILVUS_HOST=127.0.0.1
MILVUS_PORT=19530
MILVUS_METRICS_PORT=19536
MILVUS_URL="http://$MILVUS_HOST:$MILVUS_PORT"
MILVUS_PID_FILE=$MILVUS_BASE/milvus.pid
MILVUS_LOG=$MILVUS_BASE/logs/milvus.log

milvus_python() { "$MILVUS_VENV/bin/python" "$@"; }

# The installed package's version, empty when not installed.
milvus_installed_version() {
    [[ -x $MILVUS_VENV/bin/python ]] || return 0
    milvus_python -c 'import milvus; print(milvus.__version__)' 2>/dev/null || true
}

milvus_install() {
    if [[ "$(milvus_installed_version)" == "$MILVUS_VERSION" ]]; then
        return 0
    fi
    local python
    python="$(command -v python3 || true)"
    if [[ -z $python ]]; then
        apt_install python3 python3-venv
        python="$(command -v python3)"
    fi
    if [[ ! -x $MILVUS_VENV/bin/python ]]; then
        if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            apt_install python3-venv
        fi
        step "creating virtualenv $MILVUS_VENV"
        mkdir -p "$(dirname "$MILVUS_VENV")"
        quiet "$python" -m venv "$MILVUS_VENV"
    fi
    step "pip install milvus==$MILVUS_VERSION (into $MILVUS_VENV)"
    quiet "$MILVUS_VENV/bin/python" -m pip install -q --disable-pip-version-check "milvus==$MILVUS_VERSION"
    [[ "$(milvus_installed_version)" == "$MILVUS_VERSION" ]] ||
        die "pip installed milvus, but the venv reports version '$(milvus_installed_version)', not $MILVUS_VERSION"
}

# Writes configs/milvus.yaml with the package's own config helper (which also
# checks that every port is free: it binds each one), configs/etcd.yaml, and
# unpacks bin/ (skipped when the package's archives did not change).
milvus_configure() {
    mkdir -p "$MILVUS_BASE/configs" "$MILVUS_BASE/logs" "$MILVUS_BASE/data" "$MILVUS_BASE/run"
    quiet milvus_python - "$MILVUS_BASE" <<'PY'
import socket
import sys
import milvus


def try_bind_port(port):
    # The helper's own check binds without SO_REUSEADDR, so it fails for a
    # minute after a killed server (its connections linger in TIME_WAIT),
    # where Milvus itself (Go sets SO_REUSEADDR) starts fine. A port that
    # something really listens on still fails to bind.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


base = sys.argv[1]
config = milvus.MilvusServerConfig(
    data_dir=base,
    proxy_port=19530,
    etcd_port=19531,
    root_coord_port=19532,
    proxy_internal_port=19533,
    query_coord_port=19534,
    query_node_port=19535,
    index_coord_port=19536,
    index_node_port=19537,
    data_coord_port=19538,
    data_node_port=19539,
)
# Without an ip every component advertises (and its peers dial) the first
# non-loopback address of the machine.
for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode"):
    config.set(f"{component}.ip", "127.0.0.1")
config.set("proxy.http.enabled", "false")
# Strongly consistent reads (all vectorgate reads) wait for the next time
# tick: 200 ms by default, 20 ms here so that the test suites' thousands of
# reads do not each wait ~0.2 s. A production cluster may keep its default.
config.set("proxy.timeTickInterval", "20")
config.try_bind_port = try_bind_port
config.resolve()
milvus._initialize_data_files(base)
PY
    # The embedded etcd on unix sockets (relative to the working directory,
    # $MILVUS_BASE) instead of 2379/2380. The `:N` suffixes are required.
    cat >"$MILVUS_BASE/configs/etcd.yaml" <<'YAML'
# Written by vectorgate's scripts/services.d/milvus.sh
listen-client-urls: unix://etcd-client.sock:1
advertise-client-urls: unix://etcd-client.sock:1
listen-peer-urls: unix://etcd-peer.sock:2
initial-advertise-peer-urls: unix://etcd-peer.sock:2
initial-cluster: default=unix://etcd-peer.sock:2
YAML
    [[ -x $MILVUS_BASE/bin/milvus ]] || die "the milvus package did not unpack $MILVUS_BASE/bin/milvus"
}

# The pid of our running server, or nothing. A pid file whose process is
# gone, or is not our binary (pid reuse), is stale.
milvus_pid() {
    [[ -f $MILVUS_PID_FILE ]] || return 0
    local pid exe
    pid="$(cat "$MILVUS_PID_FILE" 2>/dev/null || true)"
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    if [[ $exe == "$MILVUS_BASE/bin/milvus" ]]; then
        echo "$pid"
    fi
}

milvus_healthy() {
    milvus_python - "$MILVUS_METRICS_PORT" "$MILVUS_HOST" "$MILVUS_PORT" <<'PY' >/dev/null 2>&1
import socket, sys, urllib.request
port, host, client_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
    if b"OK" not in resp.read():
        sys.exit(1)
socket.create_connection((host, client_port), timeout=2).close()
PY
}

milvus_rss_mb() {
    local pid=$1
    awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || echo "?"
}

milvus_start() {
    # Leftovers of a killed server: its pid file and the etcd unix sockets
    # (a listener cannot bind over an existing socket file).
    rm -f "$MILVUS_PID_FILE" "$MILVUS_BASE"/etcd-client.sock:1 "$MILVUS_BASE"/etcd-peer.sock:2
    {
        printf '\n==== %s: starting milvus %s ====\n' "$(date -u +%FT%TZ)" "$MILVUS_VERSION"
    } >>"$MILVUS_LOG"
    # setsid: its own session, so it outlives this script and a test's process
    # group. The inner shell writes its pid, closes every inherited descriptor
    # but 0-2 (services.sh's lock on fd 9, a caller's output pipe: a server
    # holding those would block the next `up` or a test runner waiting for
    # EOF), then becomes the server.
    # shellcheck disable=SC2016 # $$, $1 and $2 belong to the inner shell
    (
        cd "$MILVUS_BASE" || exit 1
        env \
            MILVUS_RUN_DIR="$MILVUS_BASE/run" \
            LD_LIBRARY_PATH="$MILVUS_BASE/bin" \
            DEPLOY_MODE=STANDALONE \
            METRICS_PORT="$MILVUS_METRICS_PORT" \
            MILVUSCONF="$MILVUS_BASE/configs" \
            ETCD_USE_EMBED=true \
            ETCD_CONFIG_PATH="$MILVUS_BASE/configs/etcd.yaml" \
            ETCD_DATA_DIR="$MILVUS_BASE/data/etcd.data" \
            setsid bash -c '
                echo $$ >"$1"
                for fd in /proc/$$/fd/*; do
                    fd=${fd##*/}
                    if ((fd > 2)); then { eval "exec $fd>&-"; } 2>/dev/null; fi
                done
                exec "$2" run standalone' milvus-start \
            "$MILVUS_PID_FILE" "$MILVUS_BASE/bin/milvus" \
            >>"$MILVUS_LOG" 2>&1 </dev/null &
    )
}

milvus_wait_ready() {
    local _ pid
    for _ in $(seq 1 240); do
        if milvus_healthy; then
            return 0
        fi
        pid="$(milvus_pid)"
        if [[ -z $pid ]] && [[ -f $MILVUS_PID_FILE ]] && ! kill -0 "$(cat "$MILVUS_PID_FILE")" 2>/dev/null; then
            printf '[services] milvus exited while starting; last lines of %s:\n' "$MILVUS_LOG" >&2
            tail -n 30 "$MILVUS_LOG" | cut -c1-400 >&2
            exit 1
        fi
        sleep 0.25
    done
    printf '[services] milvus not healthy after 60 s; last lines of %s:\n' "$MILVUS_LOG" >&2
    tail -n 30 "$MILVUS_LOG" | cut -c1-400 >&2
    exit 1
}

milvus_stop() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    # Milvus 2.3.5 hangs in its SIGTERM shutdown.
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    die "milvus (pid $pid) survived SIGKILL"
}

svc_milvus_up() {
    local started=$SECONDS pid
    milvus_install
    pid="$(milvus_pid)"
    if [[ ${VECTORGATE_MILVUS_FRESH:-0} == 1 ]]; then
        if [[ -n $pid ]]; then
            step "stopping milvus (pid $pid) to wipe its data (VECTORGATE_MILVUS_FRESH=1)"
            milvus_stop "$pid"
            pid=""
        fi
        step "wiping $MILVUS_BASE/data"
        rm -rf "$MILVUS_BASE/data"
    fi
    if [[ -n $pid ]] && milvus_healthy; then
        step "milvus $MILVUS_VERSION already running (pid $pid) on $MILVUS_HOST:$MILVUS_PORT"
    else
        if [[ -n $pid ]]; then
            # Alive but not answering (still starting, or wedged): give it the
            # usual start-up time before replacing it.
            step "milvus (pid $pid) is running but not healthy yet: waiting"
            if ! (milvus_wait_ready) 2>/dev/null; then
                step "milvus (pid $pid) never became healthy: restarting it"
                milvus_stop "$pid"
                pid=""
            fi
        fi
        if [[ -z $pid ]]; then
            if [[ ! -d $MILVUS_BASE/data/etcd.data ]]; then
                step "milvus: starting from an empty data directory ($MILVUS_BASE/data)"
            fi
            step "configuring milvus $MILVUS_VERSION in $MILVUS_BASE"
            milvus_configure
            step "starting milvus $MILVUS_VERSION on $MILVUS_HOST:$MILVUS_PORT (log: $MILVUS_LOG)"
            milvus_start
            milvus_wait_ready
        fi
    fi
    pid="$(milvus_pid)"
    env_set VECTORGATE_TEST_MILVUS_URL "$MILVUS_URL"
    step "milvus ready in $((SECONDS - started)) s: pid $pid, RSS $(milvus_rss_mb "$pid") MB, VECTORGATE_TEST_MILVUS_URL=$MILVUS_URL"
}

svc_milvus_down() {
    local pid
    pid="$(milvus_pid)"
    if [[ -n $pid ]]; then
        step "stopping milvus (pid $pid): SIGTERM, then SIGKILL after 5 s"
        milvus_stop "$pid"
    else
        step "milvus already stopped"
    fi
    rm -f "$MILVUS_PID_FILE"
    env_set VECTORGATE_TEST_MILVUS_URL ""
}

svc_milvus_status() {
    local pid
    if [[ "$(milvus_installed_version)" != "$MILVUS_VERSION" ]]; then
        echo "milvus: down (milvus $MILVUS_VERSION not installed in $MILVUS_VENV)"
        return 1
    fi
    pid="$(milvus_pid)"
    if [[ -z $pid ]]; then
        echo "milvus: down (no server running from $MILVUS_BASE)"
        return 1
    fi
    if ! milvus_healthy; then
        echo "milvus: degraded (pid $pid running, but /healthz on :$MILVUS_METRICS_PORT or $MILVUS_HOST:$MILVUS_PORT does not answer; see $MILVUS_LOG)"
        return 1
    fi
    echo "milvus: up (Milvus $MILVUS_VERSION standalone, pid $pid, RSS $(milvus_rss_mb "$pid") MB, $MILVUS_URL)"
}
