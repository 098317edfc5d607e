# shellcheck shell=bash
# Shared helpers for hack/services/{up,down,restart}.sh. Source it; don't run it.
#
# Private, throw-away database servers for the test-suite and benchmarks: Redis, PostgreSQL,
# MariaDB and a DynamoDB-compatible endpoint (moto's standalone server). Each runs from the
# Debian packages (or the project's .venv for moto) with its data, pid file and log under
# $SERVICES_DIR, on non-default loopback ports, without the distro's init scripts.
#
# Environment (all optional):
#   PYNCETTE_SERVICES_DIR       where data/logs/pids live (default: <repo>/.services)
#   PYNCETTE_REDIS_PORT         16379
#   PYNCETTE_POSTGRES_PORT      15432
#   PYNCETTE_MYSQL_PORT         13306
#   PYNCETTE_DYNAMODB_PORT      18000
#   PYNCETTE_TOXIPROXY_PORT     18474 (Toxiproxy's HTTP API; the proxies it serves pick their own ports)
#   PYNCETTE_SERVICES_TIMEOUT   seconds to wait for one server to answer (default 60)

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/detach.sh
source "$REPO_ROOT/hack/lib/detach.sh"
SERVICES_DIR="${PYNCETTE_SERVICES_DIR:-$REPO_ROOT/.services}"
REDIS_PORT="${PYNCETTE_REDIS_PORT:-16379}"
POSTGRES_PORT="${PYNCETTE_POSTGRES_PORT:-15432}"
MYSQL_PORT="${PYNCETTE_MYSQL_PORT:-13306}"
DYNAMODB_PORT="${PYNCETTE_DYNAMODB_PORT:-18000}"
TOXIPROXY_PORT="${PYNCETTE_TOXIPROXY_PORT:-18474}"
SERVICES_TIMEOUT="${PYNCETTE_SERVICES_TIMEOUT:-60}"
ALL_SERVICES=(redis postgres mariadb dynamodb toxiproxy)

# Fixed credentials of the private instances (they only listen on 127.0.0.1).
POSTGRES_SUPERUSER=postgres
POSTGRES_PASSWORD=postgres
MYSQL_USER=pyncette
MYSQL_PASSWORD=pyncette
DATABASE_NAME=pyncette

mkdir -p "$SERVICES_DIR"
SERVICES_DIR="$(cd "$SERVICES_DIR" && pwd)"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Print the last lines of a log file to stderr, framed, for a failure report.
log_tail() {
    local file="$1"
    if [[ -f "$file" ]]; then
        printf -- '----- last lines of %s -----\n' "$file" >&2
        tail -n 40 "$file" >&2 || true
        printf -- '----- end of %s -----\n' "$file" >&2
    else
        log "(no log file at $file)"
    fi
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# ---------------------------------------------------------------------------------------------
# Packages

# Install Debian packages that are missing. Refreshes the package lists first (a fresh machine may
# have none) and keeps the distro's maintainer scripts from starting system-wide services.
APT_UPDATED=0
apt_install() {
    (($# > 0)) || return 0
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0
    {
        if [[ "$APT_UPDATED" -eq 0 ]]; then
            log "apt-get update"
            as_root apt-get -o DPkg::Lock::Timeout=600 update -qq && APT_UPDATED=1
        fi
        log "installing Debian packages: $*"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends "$@" >"$SERVICES_DIR/apt.log" 2>&1
    } || rc=$?
    if [[ "$created_policy" -eq 1 ]]; then
        as_root rm -f "$policy"
    fi
    if [[ "$rc" -ne 0 ]]; then
        log_tail "$SERVICES_DIR/apt.log"
        die "apt-get install $* failed (exit $rc)"
    fi
}

postgres_bindir() {
    local dir newest=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" ]] && newest="$(printf '%s\n%s\n' "$newest" "$dir" | sort -V | tail -n 1)"
    done
    [[ -n "$newest" ]] && printf '%s\n' "$newest"
}

mariadb_server_bin() {
    local candidate
    for candidate in /usr/sbin/mariadbd /usr/sbin/mysqld; do
        [[ -x "$candidate" ]] && {
            printf '%s\n' "$candidate"
            return 0
        }
    done
    return 1
}

mariadb_client_bin() {
    local name
    for name in mariadb mysql; do
        command -v "$name" 2>/dev/null && return 0
    done
    return 1
}

mariadb_admin_bin() {
    local name
    for name in mariadb-admin mysqladmin; do
        command -v "$name" 2>/dev/null && return 0
    done
    return 1
}

mariadb_install_db_bin() {
    local name
    for name in mariadb-install-db mysql_install_db; do
        command -v "$name" 2>/dev/null && return 0
    done
    return 1
}

# Install whatever the named services need and is not there yet.
ensure_packages() {
    local wanted=() svc
    for svc in "$@"; do
        case "$svc" in
        redis)
            command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
                wanted+=(redis-server redis-tools)
            ;;
        postgres)
            postgres_bindir >/dev/null || wanted+=(postgresql)
            ;;
        mariadb)
            { mariadb_server_bin && mariadb_client_bin && mariadb_admin_bin && mariadb_install_db_bin; } \
                >/dev/null 2>&1 || wanted+=(mariadb-server mariadb-client)
            ;;
        dynamodb | toxiproxy) ;;
        esac
    done
    command -v curl >/dev/null 2>&1 || wanted+=(curl)
    apt_install "${wanted[@]}"
}

# ---------------------------------------------------------------------------------------------
# Process helpers

# Start a long-running command detached from the caller: its own session, stdin from /dev/null,
# stdout/stderr appended to a log, and no inherited descriptor (hack/lib/detach.sh). Writes its pid to a file.
spawn() {
    local pidfile="$1" logfile="$2"
    shift 2
    (detach "$@") </dev/null >>"$logfile" 2>&1 &
    echo "$!" >"$pidfile"
}

pid_from_file() {
    local pidfile="$1" pid
    [[ -r "$pidfile" ]] || return 1
    pid="$(head -n 1 "$pidfile" 2>/dev/null | tr -dc '0-9')"
    [[ -n "$pid" ]] || return 1
    printf '%s\n' "$pid"
}

# Alive = exists and is not a zombie (an orphaned server's parent may never reap it).
pid_alive() {
    local pid="${1:-}" state
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" ]]
}

# Wait until a pid has exited; after `timeout` seconds send SIGKILL to it (and its process group).
wait_pid_gone() {
    local pid="$1" timeout="${2:-30}" deadline
    deadline=$((SECONDS + timeout))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "pid $pid did not exit within ${timeout}s, sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            return 0
        fi
        sleep 0.1
    done
}

# Poll `check_fn` until it succeeds, the process behind `pidfile` dies, or the timeout passes.
wait_ready() {
    local name="$1" check_fn="$2" logfile="$3" pidfile="${4:-}" deadline pid
    deadline=$((SECONDS + SERVICES_TIMEOUT))
    until "$check_fn" >/dev/null 2>&1; do
        if [[ -n "$pidfile" ]] && pid="$(pid_from_file "$pidfile")" && ! pid_alive "$pid"; then
            log_tail "$logfile"
            die "$name exited during start-up (see $logfile)"
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$logfile"
            die "$name did not answer within ${SERVICES_TIMEOUT}s (see $logfile)"
        fi
        sleep 0.1
    done
}

# Something other than our own server listening on the port makes the start fail loudly.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Redis

REDIS_DIR="$SERVICES_DIR/redis"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

redis_url() { printf 'redis://127.0.0.1:%s/0\n' "$REDIS_PORT"; }

redis_check() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]; }

redis_start() {
    mkdir -p "$REDIS_DIR"
    cat >"$REDIS_DIR/redis.conf" <<EOF
# Written by hack/services; private test instance.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize no
dir $REDIS_DIR
dbfilename dump.rdb
appendonly yes
appendfsync everysec
save 3600 1 300 100 60 10000
databases 16
EOF
    spawn "$REDIS_PIDFILE" "$REDIS_LOG" redis-server "$REDIS_DIR/redis.conf"
    wait_ready redis redis_check "$REDIS_LOG" "$REDIS_PIDFILE"
}

redis_stop() {
    local pid
    pid="$(pid_from_file "$REDIS_PIDFILE")" || return 0
    if pid_alive "$pid"; then
        # SHUTDOWN persists the data set (AOF + RDB) before exiting.
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 30
    fi
    rm -f "$REDIS_PIDFILE"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL (refuses to run as root: as root we run it as the `postgres` OS user)

PG_RUN_AS=""
if is_root; then
    PG_RUN_AS=postgres
fi

pg_run() {
    if [[ -n "$PG_RUN_AS" ]]; then
        runuser -u "$PG_RUN_AS" -- "$@"
    else
        "$@"
    fi
}

# The postgres OS user needs to reach its data dir. If it cannot traverse $SERVICES_DIR (a checkout
# under a private home directory, say), the cluster lives in a per-checkout directory under /var/tmp.
pg_base_dir() {
    local base="$SERVICES_DIR/postgres"
    if [[ -n "$PG_RUN_AS" ]] && ! runuser -u "$PG_RUN_AS" -- test -x "$SERVICES_DIR" 2>/dev/null; then
        base="/var/tmp/pyncette-services-$(printf '%s' "$SERVICES_DIR" | sha1sum | cut -c1-12)/postgres"
    fi
    printf '%s\n' "$base"
}

PG_BASE="$(pg_base_dir)"
PG_DATA="$PG_BASE/data"
PG_LOG="$PG_BASE/postgres.log"
# Unix sockets have a ~107 byte path limit; long checkout paths fall back to /tmp.
if ((${#PG_BASE} < 90)); then PG_SOCKET_DIR="$PG_BASE"; else PG_SOCKET_DIR=/tmp; fi

postgres_url() {
    printf 'postgresql://%s:%s@127.0.0.1:%s/%s\n' "$POSTGRES_SUPERUSER" "$POSTGRES_PASSWORD" "$POSTGRES_PORT" "$DATABASE_NAME"
}

postgres_check() {
    PGPASSWORD="$POSTGRES_PASSWORD" PGCONNECT_TIMEOUT=2 "$(postgres_bindir)/psql" -X -q -t -A \
        -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" -d "$DATABASE_NAME" -c 'SELECT 1' 2>/dev/null |
        grep -x 1 >/dev/null
}

postgres_ready() {
    "$(postgres_bindir)/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -t 2
}

postgres_init() {
    local bindir="$1" pwfile
    rm -rf "$PG_DATA"
    mkdir -p "$PG_BASE"
    [[ -n "$PG_RUN_AS" ]] && chown "$PG_RUN_AS": "$PG_BASE"
    pwfile="$PG_BASE/.pwfile"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    [[ -n "$PG_RUN_AS" ]] && chown "$PG_RUN_AS": "$pwfile"
    chmod 600 "$pwfile"
    if ! pg_run "$bindir/initdb" -D "$PG_DATA" -U "$POSTGRES_SUPERUSER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$PG_BASE/initdb.log" 2>&1; then
        rm -f "$pwfile"
        log_tail "$PG_BASE/initdb.log"
        die "initdb failed"
    fi
    rm -f "$pwfile"
    pg_run tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by hack/services; private test instance on loopback.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
EOF
    pg_run tee -a "$PG_DATA/postgresql.conf" >/dev/null <<EOF

# --- hack/services ---
listen_addresses = '127.0.0.1'
port = $POSTGRES_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 300
shared_buffers = 128MB
EOF
}

postgres_start() {
    local bindir
    bindir="$(postgres_bindir)" || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    mkdir -p "$PG_BASE"
    [[ -n "$PG_RUN_AS" ]] && chown "$PG_RUN_AS": "$PG_BASE"
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        postgres_init "$bindir"
    fi
    # A pid file left by a killed server (machine reused) would make pg_ctl refuse to start.
    if [[ -f "$PG_DATA/postmaster.pid" ]] && ! pid_alive "$(head -n 1 "$PG_DATA/postmaster.pid")"; then
        rm -f "$PG_DATA/postmaster.pid"
    fi
    if ! pg_run "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$SERVICES_TIMEOUT" -s start 9>&-; then
        log_tail "$PG_LOG"
        die "PostgreSQL failed to start (see $PG_LOG)"
    fi
    wait_ready postgres postgres_ready "$PG_LOG"
    # The application database; the superuser password was set by initdb.
    if ! pg_run "$bindir/psql" -X -q -t -A -h "$PG_SOCKET_DIR" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE_NAME'" | grep -x 1 >/dev/null; then
        pg_run "$bindir/psql" -X -q -h "$PG_SOCKET_DIR" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" -d postgres \
            -c "CREATE DATABASE $DATABASE_NAME" >/dev/null
    fi
    wait_ready postgres postgres_check "$PG_LOG"
}

postgres_stop() {
    local bindir pid
    [[ -f "$PG_DATA/postmaster.pid" ]] || return 0
    pid="$(head -n 1 "$PG_DATA/postmaster.pid" | tr -dc '0-9')"
    if pid_alive "$pid"; then
        bindir="$(postgres_bindir)" || die "PostgreSQL binaries not found"
        # fast: disconnect clients, shutdown checkpoint, keep all committed data.
        pg_run "$bindir/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop 9>&- || true
        wait_pid_gone "$pid" 30
    fi
    rm -f "$PG_DATA/postmaster.pid"
}

# ---------------------------------------------------------------------------------------------
# MariaDB (a private instance run as the invoking user; as root with --user=root)

MYSQL_DIR="$SERVICES_DIR/mariadb"
MYSQL_DATA="$MYSQL_DIR/data"
MYSQL_PIDFILE="$MYSQL_DIR/mariadb.pid"
MYSQL_LOG="$MYSQL_DIR/mariadb.log"
if ((${#MYSQL_DIR} < 90)); then MYSQL_SOCKET="$MYSQL_DIR/mysqld.sock"; else
    MYSQL_SOCKET="/tmp/pyncette-mariadb-$MYSQL_PORT.sock"
fi

mysql_url() { printf 'mysql://%s:%s@127.0.0.1:%s/%s\n' "$MYSQL_USER" "$MYSQL_PASSWORD" "$MYSQL_PORT" "$DATABASE_NAME"; }

mariadb_check() {
    "$(mariadb_client_bin)" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$MYSQL_PORT" -u "$MYSQL_USER" \
        -p"$MYSQL_PASSWORD" --connect-timeout=2 -N -B -e 'SELECT 1' "$DATABASE_NAME" 2>/dev/null | grep -x 1 >/dev/null
}

mariadb_root_ping() {
    "$(mariadb_admin_bin)" --no-defaults --socket="$MYSQL_SOCKET" -u root --connect-timeout=2 ping
}

mariadb_server_args() {
    local args=(--no-defaults --datadir="$MYSQL_DATA" --socket="$MYSQL_SOCKET" --pid-file="$MYSQL_PIDFILE")
    is_root && args+=(--user=root)
    printf '%s\n' "${args[@]}"
}

mariadb_start() {
    local server args=() install_db
    server="$(mariadb_server_bin)" || die "MariaDB server binary not found"
    mkdir -p "$MYSQL_DIR"
    mapfile -t args < <(mariadb_server_args)
    local fresh=0
    if [[ ! -d "$MYSQL_DATA/mysql" ]]; then
        fresh=1
        rm -rf "$MYSQL_DATA"
        install_db="$(mariadb_install_db_bin)" || die "mariadb-install-db not found"
        local install_args=(--no-defaults --datadir="$MYSQL_DATA" --auth-root-authentication-method=normal
            --skip-test-db)
        is_root && install_args+=(--user=root)
        if ! "$install_db" "${install_args[@]}" >"$MYSQL_DIR/install-db.log" 2>&1; then
            log_tail "$MYSQL_DIR/install-db.log"
            die "mariadb-install-db failed"
        fi
    fi
    spawn "$MYSQL_DIR/launcher.pid" "$MYSQL_LOG" "$server" "${args[@]}" \
        --bind-address=127.0.0.1 --port="$MYSQL_PORT" --skip-name-resolve \
        --max-connections=500 --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        --innodb-buffer-pool-size=128M --log-error="$MYSQL_LOG"
    # The server writes its own pid file too; the launcher pid is the same process (no fork).
    wait_ready mariadb mariadb_root_ping "$MYSQL_LOG" "$MYSQL_DIR/launcher.pid"
    if [[ "$fresh" -eq 1 ]] || ! mariadb_check; then
        local sql
        sql="DROP USER IF EXISTS ''@'localhost';
DROP USER IF EXISTS ''@'${HOSTNAME:-localhost}';
CREATE DATABASE IF NOT EXISTS \`$DATABASE_NAME\`;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;"
        if ! "$(mariadb_client_bin)" --no-defaults --socket="$MYSQL_SOCKET" -u root <<<"$sql" >>"$MYSQL_LOG" 2>&1; then
            log_tail "$MYSQL_LOG"
            die "creating the MariaDB database/user failed"
        fi
    fi
    wait_ready mariadb mariadb_check "$MYSQL_LOG" "$MYSQL_DIR/launcher.pid"
}

mariadb_stop() {
    local pid
    pid="$(pid_from_file "$MYSQL_DIR/launcher.pid")" || pid="$(pid_from_file "$MYSQL_PIDFILE")" || return 0
    if pid_alive "$pid"; then
        "$(mariadb_admin_bin)" --no-defaults --socket="$MYSQL_SOCKET" -u root --connect-timeout=5 shutdown \
            >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 60
    fi
    rm -f "$MYSQL_DIR/launcher.pid" "$MYSQL_PIDFILE"
}

# ---------------------------------------------------------------------------------------------
# DynamoDB endpoint: moto's standalone server from the project's .venv (state is in memory only)

DYNAMODB_DIR="$SERVICES_DIR/dynamodb"
DYNAMODB_PIDFILE="$DYNAMODB_DIR/moto.pid"
DYNAMODB_LOG="$DYNAMODB_DIR/moto.log"
MOTO_SERVER="$REPO_ROOT/.venv/bin/moto_server"

dynamodb_endpoint() { printf 'http://127.0.0.1:%s\n' "$DYNAMODB_PORT"; }

dynamodb_check() {
    curl -fsS --max-time 2 -X POST "http://127.0.0.1:$DYNAMODB_PORT/" \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
        -d '{}' | grep TableNames >/dev/null
}

dynamodb_start() {
    if [[ ! -x "$MOTO_SERVER" ]]; then
        log "$MOTO_SERVER is missing: running 'make venv'"
        make -C "$REPO_ROOT" venv >"$SERVICES_DIR/venv.log" 2>&1 || {
            log_tail "$SERVICES_DIR/venv.log"
            die "'make venv' failed"
        }
        [[ -x "$MOTO_SERVER" ]] || die "'make venv' did not install moto_server (moto[server] in the dev extra?)"
    fi
    mkdir -p "$DYNAMODB_DIR"
    # One request at a time: moto's threaded server does not make conditional writes atomic.
    spawn "$DYNAMODB_PIDFILE" "$DYNAMODB_LOG" "$REPO_ROOT/.venv/bin/python" "$REPO_ROOT/hack/services/moto_serial.py" 127.0.0.1 "$DYNAMODB_PORT"
    wait_ready dynamodb dynamodb_check "$DYNAMODB_LOG" "$DYNAMODB_PIDFILE"
}

dynamodb_stop() {
    local pid
    pid="$(pid_from_file "$DYNAMODB_PIDFILE")" || return 0
    if pid_alive "$pid"; then
        # moto runs in its own session (setsid): stop the whole process group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 15
    fi
    rm -f "$DYNAMODB_PIDFILE"
}

# ---------------------------------------------------------------------------------------------
# Toxiproxy: a TCP proxy that injects network faults (timeouts, resets, latency, slow close)
# between the app and a database server, driven over its HTTP API by the fault tests and
# benchmarks/chaos.py. Built from its Go module by hack/cluster/build.sh (cached per version).
# It holds no proxies of its own: every test creates (and deletes) the proxies it needs.

TOXIPROXY_DIR="$SERVICES_DIR/toxiproxy"
TOXIPROXY_PIDFILE="$TOXIPROXY_DIR/toxiproxy.pid"
TOXIPROXY_LOG="$TOXIPROXY_DIR/toxiproxy.log"

toxiproxy_url() { printf 'http://127.0.0.1:%s\n' "$TOXIPROXY_PORT"; }

toxiproxy_check() { curl -fsS --max-time 2 "http://127.0.0.1:$TOXIPROXY_PORT/version" >/dev/null; }

# Where hack/cluster/build.sh puts the binaries of the version pinned in its wrapper module.
toxiproxy_bin_dir() {
    local version
    version="$(awk '$1 == "github.com/Shopify/toxiproxy/v2" { print $2; exit }' \
        "$REPO_ROOT/hack/cluster/modules/toxiproxy/go.mod")"
    printf '%s/cluster/toxiproxy-%s\n' "${PYNCETTE_CACHE_DIR:-$HOME/.cache/pyncette}" "$version"
}

toxiproxy_start() {
    local build_log bin_dir
    mkdir -p "$TOXIPROXY_DIR"
    build_log="$TOXIPROXY_DIR/build.log"
    command -v go >/dev/null 2>&1 || apt_install golang-go
    if ! bash "$REPO_ROOT/hack/cluster/build.sh" toxiproxy >"$build_log" 2>&1; then
        log_tail "$build_log"
        die "building Toxiproxy failed (see $build_log)"
    fi
    bin_dir="$(toxiproxy_bin_dir)"
    [[ -x "$bin_dir/toxiproxy-server" ]] || die "toxiproxy-server not found after the build (see $build_log)"
    spawn "$TOXIPROXY_PIDFILE" "$TOXIPROXY_LOG" "$bin_dir/toxiproxy-server" -host 127.0.0.1 -port "$TOXIPROXY_PORT"
    wait_ready toxiproxy toxiproxy_check "$TOXIPROXY_LOG" "$TOXIPROXY_PIDFILE"
}

toxiproxy_stop() {
    local pid
    pid="$(pid_from_file "$TOXIPROXY_PIDFILE")" || return 0
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 15
    fi
    rm -f "$TOXIPROXY_PIDFILE"
}

# ---------------------------------------------------------------------------------------------
# Dispatch

service_url() {
    case "$1" in
    redis) redis_url ;;
    postgres) postgres_url ;;
    mariadb) mysql_url ;;
    dynamodb) dynamodb_endpoint ;;
    toxiproxy) toxiproxy_url ;;
    esac
}

service_port() {
    case "$1" in
    redis) echo "$REDIS_PORT" ;;
    postgres) echo "$POSTGRES_PORT" ;;
    mariadb) echo "$MYSQL_PORT" ;;
    dynamodb) echo "$DYNAMODB_PORT" ;;
    toxiproxy) echo "$TOXIPROXY_PORT" ;;
    esac
}

service_log() {
    case "$1" in
    redis) echo "$REDIS_LOG" ;;
    postgres) echo "$PG_LOG" ;;
    mariadb) echo "$MYSQL_LOG" ;;
    dynamodb) echo "$DYNAMODB_LOG" ;;
    toxiproxy) echo "$TOXIPROXY_LOG" ;;
    esac
}

normalize_service() {
    case "$1" in
    redis) echo redis ;;
    postgres | postgresql | pg) echo postgres ;;
    mariadb | mysql) echo mariadb ;;
    dynamodb | moto | dynamo) echo dynamodb ;;
    toxiproxy) echo toxiproxy ;;
    *) die "unknown service '$1' (expected one of: ${ALL_SERVICES[*]})" ;;
    esac
}

# Start one service unless it already answers. Fails loudly if the port belongs to something else.
service_up() {
    local svc="$1"
    if "${svc}_check" >/dev/null 2>&1; then
        printf '%-9s %s (already running)\n' "$svc" "$(service_url "$svc")"
        return 0
    fi
    # Ours but not answering (hung, half started): stop it before starting afresh.
    "${svc}_stop"
    if port_in_use "$(service_port "$svc")"; then
        die "$svc: port $(service_port "$svc") on 127.0.0.1 is taken by another process that does not answer as $svc"
    fi
    "${svc}_start"
    printf '%-9s %s\n' "$svc" "$(service_url "$svc")"
}

service_down() { "${1}_stop"; }

# Serialise concurrent invocations (two test sessions starting services at once). The lock
# descriptor (9) is closed in every server we start, so it is released when the script exits.
take_lock() {
    exec 9>"$SERVICES_DIR/.lock"
    flock -w 600 9 || die "timed out waiting for $SERVICES_DIR/.lock"
}
