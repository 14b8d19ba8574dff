# shellcheck shell=bash
# OceanBase for vectorgate's tests: sourced by scripts/services.sh, which
# provides step/die/quiet/apt_install/env_set, REPO_ROOT and LOG_DIR.
#
#   svc_oceanbase_up       install if needed, start, wait until ready
#   svc_oceanbase_down     stop (SIGTERM, then SIGKILL if it hangs)
#   svc_oceanbase_status   one line; exit 1 if down
#
# The server is seekdb, OceanBase's single-node engine (OceanBase 4.3.5
# kernel, MySQL mode, VECTOR type and HNSW indexes). It ships as a standalone
# server binary inside the PyPI wheel pylibseekdb: the wheel is downloaded
# with pip (never installed) and two files are taken out of it, the binary
# and the libaio it links, into $OB_HOME. No container, no Python at run time.
#
# `up` writes to target/services.env:
#   VECTORGATE_TEST_OCEANBASE_URL=mysql://root@127.0.0.1:2881/test
#       user root, no password, database `test` (seekdb creates both).
#
# Notes:
# - seekdb binds 0.0.0.0:$OB_PORT and its RPC port; it has no option to bind
#   127.0.0.1 only. Firewall the port on a shared machine.
# - TELEMETRY_ENABLED=false is required: otherwise seekdb reports to an
#   outside host.
# - log_disk_size must be the same on every start: a smaller value on an
#   existing data directory fails with OB_MACHINE_RESOURCE_NOT_ENOUGH (and
#   the data directory remembers the larger one).
# - Data survives SIGKILL; `up` recovers from a stale pid file.

OB_WHEEL_VERSION=1.4.0.post1
OB_HOME=${VECTORGATE_SEEKDB_HOME:-/opt/vectorgate/seekdb}
OB_DATA=${VECTORGATE_SEEKDB_DATA:-/var/lib/vectorgate/seekdb}
OB_HOST=127.0.0.1
OB_PORT=2881
OB_URL="mysql://root@$OB_HOST:$OB_PORT/test"
OB_MEMORY=1G     # memory_budget: seekdb's minimum; RSS is ~250 MB idle
OB_LOG_DISK=2G   # keep identical on every start (see above)
OB_PID_FILE="$OB_DATA/run/seekdb.pid"

# Installs the mysql client (for readiness checks) and the seekdb binary.
# Idempotent: does nothing when both are there at the right version.
ob_install() {
    if ! command -v mysql >/dev/null 2>&1; then
        apt_install mariadb-client
    fi
    if [[ -x $OB_HOME/seekdb && -f $OB_HOME/libaio.so.1 &&
        "$(cat "$OB_HOME/VERSION" 2>/dev/null || true)" == "$OB_WHEEL_VERSION" ]]; then
        return 0
    fi
    local pip=(python3 -m pip)
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3 python3-pip
    fi
    local scratch
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/vectorgate-seekdb.XXXXXX")"
    step "downloading pylibseekdb==$OB_WHEEL_VERSION (the seekdb server binary, ~54 MB)"
    quiet "${pip[@]}" download --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --python-version 3.12 \
        "pylibseekdb==$OB_WHEEL_VERSION" -d "$scratch"
    local wheel
    wheel="$(find "$scratch" -maxdepth 1 -name 'pylibseekdb-*.whl' | head -n 1)"
    [[ -n $wheel ]] || die "pip download produced no pylibseekdb wheel in $scratch"
    step "extracting seekdb and libaio.so.1 into $OB_HOME"
    mkdir -p "$OB_HOME"
    quiet python3 - "$wheel" "$OB_HOME" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("seekdb", "libaio.so.1"):
        tmp = os.path.join(dest, name + ".part")
        with z.open("pylibseekdb/" + name) as src, open(tmp, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(dest, name))
PY
    printf '%s\n' "$OB_WHEEL_VERSION" >"$OB_HOME/VERSION"
    rm -rf "$scratch"
}

# The pid of the running seekdb of $OB_DATA, or nothing. Checks that the
# pid in the pid file is alive and is our binary (pids get reused).
ob_pid() {
    local pid exe
    [[ -f $OB_PID_FILE ]] || return 0
    pid="$(tr -dc '0-9' <"$OB_PID_FILE")"
    [[ -n $pid && -d /proc/$pid ]] || return 0
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    [[ $exe == "$OB_HOME/seekdb"* ]] || return 0
    ob_alive "$pid" || return 0
    echo "$pid"
}

# True while any thread of process $1 runs. A process whose main thread
# exited shows as a zombie while its other threads still shut down (and
# hold the port and the data directory); once they are gone too, it is a
# zombie waiting for init to reap it (about 2 s here), as good as gone.
ob_alive() {
    local pid=$1
    [[ -d /proc/$pid ]] || return 1
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] && return 0
    local threads
    threads="$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    ((threads > 1))
}

ob_sql() { # runs SQL as root over TCP; prints tab-separated rows
    mysql -h "$OB_HOST" -P "$OB_PORT" -u root -N -B --connect-timeout=2 "$@"
}

# True once the server says it serves requests.
ob_ready() {
    # shellcheck disable=SC2016 # V$OB_SERVER_STAT is a view name, not a variable
    [[ "$(ob_sql -e 'SELECT 1 FROM oceanbase.V$OB_SERVER_STAT WHERE START_SERVICE_TIME > 0' 2>/dev/null || true)" == 1* ]]
}

# Waits up to $1 seconds for a pid to vanish.
ob_wait_gone() {
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit * 10; i++)); do
        ob_alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

ob_start() {
    mkdir -p "$OB_DATA"
    local start_log="$LOG_DIR/seekdb-start.log"
    step "starting seekdb on port $OB_PORT (data in $OB_DATA)"
    # Daemonizes and returns at once; the daemon writes $OB_PID_FILE. fd 9
    # (services.sh's lock) is closed for it: a daemon that inherited it
    # would hold the lock, and block every later up/down, for its lifetime.
    if ! (cd "$OB_DATA" && TELEMETRY_ENABLED=false LD_LIBRARY_PATH="$OB_HOME" \
        "$OB_HOME/seekdb" --base-dir="$OB_DATA" --port "$OB_PORT" \
        --parameter "memory_budget=$OB_MEMORY" \
        --parameter "log_disk_size=$OB_LOG_DISK") </dev/null >>"$start_log" 2>&1 9>&-; then
        tail -n 20 "$start_log" >&2
        die "seekdb failed to start (see $start_log and $OB_DATA/log/)"
    fi
}

ob_wait_ready() {
    local i pid
    for ((i = 0; i < 600; i++)); do # 120 s
        ob_ready && return 0
        if ((i > 25)) && [[ -z "$(ob_pid)" ]]; then
            printf '[services] seekdb exited during startup; last lines of its log:\n' >&2
            tail -n 30 "$OB_DATA/log/seekdb.log" 2>/dev/null | cut -c1-300 >&2 || true
            die "seekdb is not running (see $OB_DATA/log/seekdb.log)"
        fi
        sleep 0.2
    done
    pid="$(ob_pid)"
    die "seekdb${pid:+ (pid $pid)} did not become ready on $OB_HOST:$OB_PORT within 120 s (see $OB_DATA/log/seekdb.log)"
}

svc_oceanbase_up() {
    [[ $(id -u) == 0 ]] || die "run as root (it installs packages and writes $OB_HOME, $OB_DATA)"
    ob_install
    local pid
    pid="$(ob_pid)"
    if [[ -n $pid ]] && ! ob_ready; then
        # Starting up, or dying after a kill: give it time to do either.
        local i
        for ((i = 0; i < 150; i++)); do
            ob_ready && break
            [[ -n "$(ob_pid)" ]] || break
            sleep 0.2
        done
        pid="$(ob_pid)"
    fi
    if [[ -n $pid ]] && ob_ready; then
        step "seekdb already running (pid $pid) on $OB_HOST:$OB_PORT"
    else
        if [[ -n $pid ]]; then
            step "seekdb (pid $pid) is not answering: restarting it"
            kill -KILL "$pid" 2>/dev/null || true
            ob_wait_gone "$pid" 30 || die "seekdb (pid $pid) survived SIGKILL for 30 s"
        fi
        if ob_sql -e 'SELECT 1' >/dev/null 2>&1; then
            die "something else answers on port $OB_PORT; stop it first"
        fi
        ob_start
        ob_wait_ready
    fi
    local version
    version="$(ob_sql -e 'SELECT @@version_comment' 2>/dev/null | cut -d' ' -f1-3 || true)"
    env_set VECTORGATE_TEST_OCEANBASE_URL "$OB_URL"
    step "oceanbase ready: ${version:-seekdb} (pid $(ob_pid)), VECTORGATE_TEST_OCEANBASE_URL=$OB_URL"
}

svc_oceanbase_down() {
    local pid
    pid="$(ob_pid)"
    if [[ -z $pid ]]; then
        step "seekdb already stopped"
    else
        step "stopping seekdb (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        if ! ob_wait_gone "$pid" 60; then
            step "seekdb (pid $pid) ignored SIGTERM for 60 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            ob_wait_gone "$pid" 30 || die "seekdb (pid $pid) survived SIGKILL for 30 s"
        fi
    fi
    env_set VECTORGATE_TEST_OCEANBASE_URL ""
}

svc_oceanbase_status() {
    local pid version
    if [[ ! -x $OB_HOME/seekdb ]]; then
        echo "oceanbase: down (seekdb not installed in $OB_HOME)"
        return 1
    fi
    pid="$(ob_pid)"
    if [[ -z $pid ]]; then
        echo "oceanbase: down (no seekdb process for $OB_DATA)"
        return 1
    fi
    if ! ob_ready; then
        echo "oceanbase: starting or unresponsive (pid $pid, nothing ready on $OB_HOST:$OB_PORT)"
        return 1
    fi
    version="$(ob_sql -e 'SELECT @@version_comment' 2>/dev/null | cut -d' ' -f1-3 || true)"
    echo "oceanbase: up (${version:-seekdb}, pid $pid, $OB_HOST:$OB_PORT, data $OB_DATA)"
}
