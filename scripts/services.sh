#!/usr/bin/env bash
# Starts, stops and reports the external services vectorgate's tests use.
#
#   scripts/services.sh up     [service...]   install if needed, start, wait until ready
#   scripts/services.sh down   [service...]   stop (never uninstalls anything)
#   scripts/services.sh status [service...]   one line per service; exit 1 if any is down
#
# Services: postgres (PostgreSQL + pgvector, defined here), plus one per
# file scripts/services.d/<name>.sh (milvus, oceanbase, ...). With no service
# named, every known service is meant, postgres first.
#
# Adding a service = a file scripts/services.d/<name>.sh, sourced by this
# script, that defines svc_<name>_up, svc_<name>_down and svc_<name>_status.
# It may use this script's helpers and variables: step, die, quiet (run a
# command with its output in the log, show the tail on failure), apt_install,
# pkg_installed, pkg_available, env_set (write an `export VAR=...` line of the
# env file, or remove it), REPO_ROOT, LOG_DIR, LOG_FILE. Rules: be idempotent
# (a second `up` must be fast), bind or at least advertise 127.0.0.1 only,
# recover a server that was SIGKILLed, and start daemons with `9>&-` (fd 9 is
# the lock that serialises up/down; a daemon that inherits it blocks every
# later up/down for its lifetime). `up`/`down` run under `set -e` (a failing
# command fails the script); `status` prints one line and returns non-zero
# when the service is down.
#
# Built for a fresh Debian/Ubuntu machine, run as root: it installs what it
# needs with apt, idempotently (a second `up` installs nothing and takes about
# a second). PostgreSQL listens on 127.0.0.1 only.
#
# `up` writes the connection settings to target/services.env (under the repo
# root, whatever the current directory) for the test command to source:
#
#   VECTORGATE_TEST_PG_URL=postgres://vectorgate:vectorgate@127.0.0.1:5432/vectorgate
#       role `vectorgate` (LOGIN CREATEDB, password `vectorgate`) owning
#       database `vectorgate`, in which the `vector` extension is created.
#
# Usage from a test command:
#   bash scripts/services.sh up && . target/services.env && cargo test ...
set -euo pipefail
shopt -s inherit_errexit

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="$REPO_ROOT/target/services.env"
KNOWN_SERVICES=(postgres)

export DEBIAN_FRONTEND=noninteractive
LOG_DIR="$REPO_ROOT/target/services-logs"
mkdir -p "$LOG_DIR"
LOG_FILE="$LOG_DIR/services.log"

step() { printf '[services] %s\n' "$*"; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

# Runs a command with its output in $LOG_FILE; on failure shows the tail.
quiet() {
    {
        printf '\n$ %s\n' "$*"
    } >>"$LOG_FILE"
    # 9>&-: daemons started from here must not inherit the lock (see main).
    if ! "$@" >>"$LOG_FILE" 2>&1 9>&-; then
        printf '[services] FAILED: %s (last lines of %s):\n' "$*" "$LOG_FILE" >&2
        tail -n 40 "$LOG_FILE" >&2
        exit 1
    fi
}

# ---------------------------------------------------------------- apt helpers

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        step "apt-get update"
        quiet apt-get update -q
        APT_UPDATED=1
    fi
}

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# True if apt can install $1 (it has a candidate version).
pkg_available() {
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')"
    [[ -n $candidate && $candidate != "(none)" ]]
}

# Installs the packages that are not installed yet; no-op (and no apt-get
# update) when all are.
apt_install() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "need root to install: ${missing[*]}"
    for p in "${missing[@]}"; do
        if ! pkg_available "$p"; then
            apt_update_once
            break
        fi
    done
    step "apt-get install ${missing[*]}"
    quiet apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ------------------------------------------------------------------ env file

# Replaces the lines of $ENV_FILE that set $1 with `export $1=$2` (or removes
# them when $2 is empty).
env_set() {
    local var=$1 value=${2:-} tmp
    mkdir -p "$(dirname "$ENV_FILE")"
    touch "$ENV_FILE"
    tmp="$(mktemp "$ENV_FILE.XXXXXX")"
    grep -v "^export $var=" "$ENV_FILE" >"$tmp" || true
    if [[ -n $value ]]; then
        printf 'export %s=%s\n' "$var" "$value" >>"$tmp"
    fi
    mv "$tmp" "$ENV_FILE"
}

# ------------------------------------------------------------------ postgres

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=vectorgate
PG_PASSWORD=vectorgate
PG_DB=vectorgate
PG_CLUSTER=main
PG_URL="postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$PG_DB"
TRIXIE_SRC_LIST=/etc/apt/sources.list.d/vectorgate-trixie-src.list

# The major version to use: the one of an existing `main` cluster whose
# server binaries are installed, else the newest installed server.
pg_major() {
    local v
    if command -v pg_lsclusters >/dev/null; then
        v="$(pg_lsclusters -h 2>/dev/null | awk -v c="$PG_CLUSTER" '$2 == c {print $1}' | sort -V | tail -n 1)"
        if [[ -n $v && -x /usr/lib/postgresql/$v/bin/postgres ]]; then
            echo "$v"
            return
        fi
    fi
    find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
        awk -F/ '{print $5}' | sort -V | tail -n 1
}

pg_psql() { # as the postgres superuser, over the unix socket
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

pg_install_server() {
    if [[ -z "$(pg_major)" ]] || ! command -v pg_ctlcluster >/dev/null; then
        apt_install postgresql
    fi
    [[ -n "$(pg_major)" ]] || die "postgresql installed but no server binaries under /usr/lib/postgresql"
}

pg_install_pgvector() {
    local major=$1
    local sharedir=/usr/share/postgresql/$major
    if [[ -f $sharedir/extension/vector.control ]]; then
        return 0
    fi
    # 1. A binary package, where the distribution has one (Debian 13+,
    #    Ubuntu 24.04+, the PGDG repository).
    local pkg="postgresql-$major-pgvector"
    if ! pkg_available "$pkg"; then
        # One apt-get update serves both the binary look-up and, should there
        # be no binary, the source download.
        [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && pg_write_trixie_list
        apt_update_once
    fi
    if pkg_available "$pkg"; then
        apt_install "$pkg"
        return 0
    fi
    # 2. Debian 12 has none: build trixie's source package against our server.
    step "no $pkg package: building pgvector from Debian trixie's source package"
    pg_add_trixie_sources
    apt_install build-essential dpkg-dev "postgresql-server-dev-$major"
    local scratch
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/vectorgate-pgvector.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$scratch'" EXIT
    step "apt-get source pgvector/trixie"
    (cd "$scratch" && quiet apt-get source -q pgvector/trixie)
    local src
    src="$(find "$scratch" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)"
    [[ -n $src ]] || die "apt-get source pgvector produced no source directory in $scratch"
    step "make && make install ($(basename "$src"), PostgreSQL $major)"
    # OPTFLAGS="" drops pgvector's default -march=native: the build must run on
    # any CPU of this architecture.
    quiet make -C "$src" -j"$(nproc)" PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" OPTFLAGS=""
    quiet make -C "$src" install PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" OPTFLAGS=""
    rm -rf "$scratch"
    trap - EXIT
    [[ -f $sharedir/extension/vector.control ]] || die "pgvector build finished but $sharedir/extension/vector.control is missing"
}

# A deb-src-only entry for Debian trixie: it adds source packages to
# `apt-get source`, and no binary package to apt's install candidates.
pg_write_trixie_list() {
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    local line="deb-src [signed-by=$keyring] http://deb.debian.org/debian trixie main"
    if [[ ! -f $TRIXIE_SRC_LIST ]] || [[ "$(cat "$TRIXIE_SRC_LIST")" != "$line" ]]; then
        step "adding $TRIXIE_SRC_LIST (deb-src only)"
        printf '%s\n' "$line" >"$TRIXIE_SRC_LIST"
        APT_UPDATED=0
    fi
}

pg_add_trixie_sources() {
    if [[ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
        apt_install debian-archive-keyring
    fi
    pg_write_trixie_list
    if ! apt-cache showsrc pgvector 2>/dev/null | grep -q '^Package: pgvector'; then
        APT_UPDATED=0
    fi
    apt_update_once
}

# Makes the cluster listen on 127.0.0.1:$PG_PORT only (a conf.d file, which
# Debian's postgresql.conf includes last), with password auth over TCP.
# Prints "restart" when a setting that needs a restart changed.
pg_configure() {
    local major=$1 changed=0
    local confdir=/etc/postgresql/$major/$PG_CLUSTER
    local conf=$confdir/conf.d/vectorgate.conf
    local want
    want="$(printf "# Written by vectorgate's scripts/services.sh\nlisten_addresses = '%s'\nport = %s\n" "$PG_HOST" "$PG_PORT")"
    if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
        install -d -o postgres -g postgres "$confdir/conf.d"
        printf '%s\n' "$want" >"$conf"
        chown postgres:postgres "$conf"
        changed=1
    fi
    local hba=$confdir/pg_hba.conf
    if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+(scram-sha-256|md5)' "$hba" &&
        ! grep -q '# vectorgate services.sh' "$hba"; then
        # First matching line wins: put ours first.
        sed -i "1i host $PG_DB $PG_USER 127.0.0.1/32 scram-sha-256 # vectorgate services.sh" "$hba"
        changed=1
    fi
    ((changed)) && echo restart
    return 0
}

# True while the cluster's postmaster process lives: its pid file names a
# process that is neither gone nor a zombie and runs postgres. (A postmaster
# killed with SIGKILL stays a zombie until init reaps it, and `pg_ctl status`
# calls that running.)
pg_running() {
    local major=$1 datadir pid state
    datadir="$(pg_lsclusters -h "$major" "$PG_CLUSTER" 2>/dev/null | awk '{print $6}')"
    [[ -n $datadir && -f $datadir/postmaster.pid ]] || return 1
    pid="$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)"
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ -n $state && $state != Z && $state != X ]] || return 1
    grep -qa postgres "/proc/$pid/cmdline" 2>/dev/null
}

# Starts the cluster and waits until it accepts TCP connections. Recovers a
# cluster that was killed: pg_ctlcluster removes a stale pid file, and the
# loop rides out the moments where the killed postmaster's backends still
# hold its shared memory or crash recovery is running.
pg_start() {
    local major=$1 deadline=$((SECONDS + 90)) tried=0
    install -d -m 2775 -o postgres -g postgres /var/run/postgresql
    install -d -m 1775 -o root -g postgres /var/log/postgresql
    while ((SECONDS < deadline)); do
        if pg_ready; then
            return 0
        fi
        if ! pg_running "$major"; then
            tried=$((tried + 1))
            pg_ctlcluster --skip-systemctl-redirect "$major" "$PG_CLUSTER" start >>"$LOG_FILE" 2>&1 9>&- || sleep 1
            continue
        fi
        sleep 0.5
    done
    printf '[services] PostgreSQL %s/%s did not answer on %s:%s within 90 s (%d start attempts); server log:\n' \
        "$major" "$PG_CLUSTER" "$PG_HOST" "$PG_PORT" "$tried" >&2
    tail -n 30 "/var/log/postgresql/postgresql-$major-$PG_CLUSTER.log" >&2 || true
    exit 1
}

pg_setup_database() {
    pg_psql -d postgres <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') THEN
        CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
    ELSE
        ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
    END IF;
END
\$\$;
SQL
    if [[ -z "$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" ]]; then
        step "creating database $PG_DB"
        pg_psql -d postgres -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
    fi
    # ALTER ... UPDATE moves an existing extension to the installed version
    # (a no-op otherwise).
    if ! pg_psql -d "$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS vector" \
        -c "ALTER EXTENSION vector UPDATE" 2>>"$LOG_FILE"; then
        die "CREATE EXTENSION vector failed in database $PG_DB (see $LOG_FILE)"
    fi
}

svc_postgres_up() {
    [[ $(id -u) == 0 ]] || die "run as root (it installs packages and manages the cluster)"
    pg_install_server
    local major
    major="$(pg_major)"
    pg_install_pgvector "$major"
    if ! pg_ctlcluster "$major" "$PG_CLUSTER" status >/dev/null 2>&1 &&
        [[ ! -d /etc/postgresql/$major/$PG_CLUSTER ]]; then
        step "pg_createcluster $major $PG_CLUSTER"
        quiet pg_createcluster "$major" "$PG_CLUSTER" -p "$PG_PORT"
    fi
    local restart
    restart="$(pg_configure "$major")"
    if [[ $restart == restart ]] && pg_running "$major"; then
        step "restarting PostgreSQL $major/$PG_CLUSTER (listen address, port or pg_hba changed)"
        quiet pg_ctlcluster --skip-systemctl-redirect "$major" "$PG_CLUSTER" restart -m fast
    fi
    if pg_running "$major" && pg_ready; then
        step "PostgreSQL $major/$PG_CLUSTER already running on $PG_HOST:$PG_PORT"
    else
        step "starting PostgreSQL $major/$PG_CLUSTER on $PG_HOST:$PG_PORT"
        pg_start "$major"
    fi
    step "ensuring role $PG_USER, database $PG_DB, extension vector"
    pg_setup_database
    local version
    if ! version="$(PGPASSWORD=$PG_PASSWORD psql -X -tA "$PG_URL" \
        -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'" 2>&1)"; then
        die "cannot log in as $PG_USER over TCP: $version"
    fi
    env_set VECTORGATE_TEST_PG_URL "$PG_URL"
    step "postgres ready: PostgreSQL $major, pgvector $version, VECTORGATE_TEST_PG_URL=$PG_URL"
}

svc_postgres_down() {
    local major
    major="$(pg_major 2>/dev/null || true)"
    if [[ -z $major ]] || ! command -v pg_ctlcluster >/dev/null; then
        step "postgres not installed: nothing to stop"
    elif pg_running "$major"; then
        step "stopping PostgreSQL $major/$PG_CLUSTER"
        quiet pg_ctlcluster --skip-systemctl-redirect "$major" "$PG_CLUSTER" stop -m fast
    else
        step "PostgreSQL $major/$PG_CLUSTER already stopped"
    fi
    env_set VECTORGATE_TEST_PG_URL ""
}

svc_postgres_status() {
    local major version
    major="$(pg_major 2>/dev/null || true)"
    if [[ -z $major ]]; then
        echo "postgres: down (not installed)"
        return 1
    fi
    if ! pg_ready; then
        echo "postgres: down (PostgreSQL $major, nothing answers on $PG_HOST:$PG_PORT)"
        return 1
    fi
    version="$(PGPASSWORD=$PG_PASSWORD psql -X -tA "$PG_URL" \
        -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'" 2>/dev/null || true)"
    if [[ -z $version ]]; then
        echo "postgres: degraded (PostgreSQL $major up on $PG_HOST:$PG_PORT, but no login as $PG_USER or no vector extension; run up)"
        return 1
    fi
    echo "postgres: up (PostgreSQL $major on $PG_HOST:$PG_PORT, pgvector $version)"
}

# ------------------------------------------------------- services.d plug-ins

for plugin in "$REPO_ROOT"/scripts/services.d/*.sh; do
    [[ -f $plugin ]] || continue
    name="$(basename "$plugin" .sh)"
    # shellcheck disable=SC1090
    . "$plugin"
    for fn in up down status; do
        declare -F "svc_${name}_$fn" >/dev/null ||
            die "$plugin does not define svc_${name}_$fn"
    done
    KNOWN_SERVICES+=("$name")
done
unset plugin name fn

# ---------------------------------------------------------------------- main

usage() {
    echo "usage: $0 up|down|status [service...]   (services: ${KNOWN_SERVICES[*]})" >&2
    exit 2
}

main() {
    (($# >= 1)) || usage
    local action=$1
    shift
    case $action in up | down | status) ;; *) usage ;; esac
    local services=("$@")
    ((${#services[@]})) || services=("${KNOWN_SERVICES[@]}")
    local s k known
    for s in "${services[@]}"; do
        known=0
        for k in "${KNOWN_SERVICES[@]}"; do [[ $s == "$k" ]] && known=1; done
        ((known)) || die "unknown service '$s' (known: ${KNOWN_SERVICES[*]})"
    done

    if [[ $action != status ]]; then
        # One up/down at a time (parallel test jobs may all call `up`). Every
        # command that may start a daemon runs with 9>&-, or the daemon would
        # hold the lock for its lifetime.
        exec 9>"$LOG_DIR/.lock"
        flock 9
        : >"$LOG_FILE"
    fi

    if [[ $action == status ]]; then
        local failed=0
        for s in "${services[@]}"; do
            "svc_${s}_status" || failed=1
        done
        return "$failed"
    fi
    # Called plainly (not in an `||` list, which would switch `set -e` off
    # inside the function): the first failing command fails the script.
    for s in "${services[@]}"; do
        "svc_${s}_${action}"
    done
}

main "$@"
