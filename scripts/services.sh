#!/usr/bin/env bash
# Makes sure the services larder's tests and demos talk to are installed and
# answering on their usual local ports:
#
#   Redis       127.0.0.1:6379  (and the redis-server/redis-cli binaries: the
#                                tests start their own servers and a 3-node
#                                Redis Cluster on free ports)
#   PostgreSQL  127.0.0.1:5432  trust authentication for local connections
#   MariaDB     127.0.0.1:3306  user root without a password
#   Kafka       127.0.0.1:9092  the tansu broker (installed with cargo install),
#                                SQLite storage under target/tansu/
#
# Idempotent: a service that already answers is left alone; a missing one is
# installed with apt-get (one `apt-get update` first, only when something must
# be installed) and started. Installing and starting need root (or sudo).
# Prints one line per service: found running, started, or installed.
#
# Run it (`bash scripts/services.sh`) or source it to reuse its functions.
set -euo pipefail

WAIT_SECONDS=${LARDER_SERVICES_WAIT_SECONDS:-30}
_apt_updated=0

say() { printf '%-11s %s\n' "$1:" "$2"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "services: '$*' needs root (or sudo)" >&2
        return 1
    fi
}

apt_install() {
    if [ "$_apt_updated" -eq 0 ]; then
        as_root apt-get update -q
        _apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# wait_for NAME COMMAND...: runs COMMAND once a second until it succeeds, for
# at most WAIT_SECONDS.
wait_for() {
    local name=$1
    shift
    local i
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    echo "services: $name did not answer within ${WAIT_SECONDS}s" >&2
    return 1
}

# --- build tools -------------------------------------------------------------
# The bundled SQLite of the embedded online store is compiled from C.

ensure_build_tools() {
    if command -v cc >/dev/null 2>&1; then
        say "cc" "found $(command -v cc)"
    else
        apt_install gcc libc6-dev
        say "cc" "installed $(command -v cc)"
    fi
}

# --- Redis -------------------------------------------------------------------

redis_answers() {
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
}

ensure_redis() {
    local installed=""
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server redis-tools
        installed="installed $(redis-server --version | awk '{print $3}'), "
    fi
    if redis_answers; then
        say "redis" "${installed}found running on 127.0.0.1:6379"
        return 0
    fi
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for "redis on 127.0.0.1:6379 (log: /var/log/redis/ci.log)" redis_answers
    say "redis" "${installed}started on 127.0.0.1:6379"
}

# --- PostgreSQL --------------------------------------------------------------

pg_answers() {
    pg_isready -q -h 127.0.0.1 -p 5432
}

pg_version() {
    ls /etc/postgresql | head -1
}

pg_hba() {
    echo "/etc/postgresql/$(pg_version)/main/pg_hba.conf"
}

pg_start() {
    if ! as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start; then
        echo "services: pg_ctlcluster could not start postgresql $(pg_version)/main" >&2
    fi
}

pg_trust_works() {
    psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -tAc 'SELECT 1'
}

# Puts trust rules for local connections first in pg_hba.conf (first match
# wins), once.
pg_configure_trust() {
    local hba tmp
    hba=$(pg_hba)
    local marker="# larder test services: trust local connections"
    if as_root grep -qF "$marker" "$hba"; then
        return 0
    fi
    tmp=$(mktemp)
    {
        echo "$marker"
        echo "local   all   all                  trust"
        echo "host    all   all   127.0.0.1/32   trust"
        echo "host    all   all   ::1/128        trust"
        echo
        as_root cat "$hba"
    } >"$tmp"
    as_root install -o postgres -g postgres -m 640 "$tmp" "$hba"
    rm -f "$tmp"
}

# Found running: report if trust authentication is missing, change nothing.
# Brought up here: configure it.
pg_check_access() {
    local mode=$1
    command -v psql >/dev/null 2>&1 || return 0
    pg_trust_works >/dev/null 2>&1 && return 0
    if [ "$mode" = fix ] && [ -d /etc/postgresql ]; then
        pg_configure_trust
        as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload
        wait_for "postgresql trust authentication" pg_trust_works
    else
        echo "services: warning: postgres@127.0.0.1:5432 needs a password (tests expect trust)" >&2
    fi
}

ensure_postgres() {
    if command -v pg_isready >/dev/null 2>&1 && pg_answers; then
        pg_check_access warn
        say "postgresql" "found running on 127.0.0.1:5432"
        return 0
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
        pg_start
        wait_for "postgresql on 127.0.0.1:5432" pg_answers
        pg_check_access fix
        say "postgresql" "started $(pg_version)/main on 127.0.0.1:5432"
        return 0
    fi
    apt_install postgresql
    pg_configure_trust
    # The package may have started the cluster itself; then reload the rules.
    if pg_answers; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload
    else
        pg_start
    fi
    wait_for "postgresql on 127.0.0.1:5432" pg_answers
    pg_check_access fix
    say "postgresql" "installed and started $(pg_version)/main on 127.0.0.1:5432"
}

# --- MariaDB -----------------------------------------------------------------

# Newer Debian releases ship only the mariadb-* names by default.
mysqladmin_cmd() { command -v mysqladmin || command -v mariadb-admin; }
mysql_cmd() { command -v mysql || command -v mariadb; }

mariadb_answers() {
    # Succeeds when the server answers, even if it refuses the login.
    "$(mysqladmin_cmd)" -h 127.0.0.1 -P 3306 -uroot --connect-timeout=2 ping
}

mariadb_root_works() {
    "$(mysql_cmd)" -h 127.0.0.1 -P 3306 -uroot --connect-timeout=2 -e 'SELECT 1'
}

mariadb_start() {
    local user=root
    if id mysql >/dev/null 2>&1; then
        user=mysql
    fi
    as_root install -d -o "$user" -g "$user" /run/mysqld
    as_root install -d /var/log/mysql
    # mariadbd refuses to run as root unless told which user to be; Debian's
    # default configuration leaves `user` commented out.
    as_root start-stop-daemon --start --oknodo --background \
        --output /var/log/mysql/ci.log \
        --exec /usr/sbin/mariadbd -- --user="$user"
}

# A fresh Debian install lets root in only through the Unix socket; the tests
# connect over TCP as root without a password.
mariadb_configure_root() {
    as_root "$(mysql_cmd)" -uroot --protocol=socket -e "
        ALTER USER 'root'@'localhost'
            IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;"
}

mariadb_check_access() {
    local mode=$1
    mariadb_root_works >/dev/null 2>&1 && return 0
    if [ "$mode" = fix ]; then
        mariadb_configure_root
        wait_for "mariadb root login without a password" mariadb_root_works
    else
        echo "services: warning: root@127.0.0.1:3306 cannot log in without a password" >&2
    fi
}

ensure_mariadb() {
    local installed=""
    if [ ! -x /usr/sbin/mariadbd ] || ! mysqladmin_cmd >/dev/null || ! mysql_cmd >/dev/null; then
        apt_install mariadb-server mariadb-client
        installed="installed, "
    fi
    if mariadb_answers >/dev/null 2>&1; then
        if [ -n "$installed" ]; then
            mariadb_check_access fix
        else
            mariadb_check_access warn
        fi
        say "mariadb" "${installed}found running on 127.0.0.1:3306"
        return 0
    fi
    mariadb_start
    wait_for "mariadb on 127.0.0.1:3306 (log: /var/log/mysql/ci.log)" mariadb_answers
    mariadb_check_access fix
    say "mariadb" "${installed}started on 127.0.0.1:3306"
}

# --- Kafka (tansu) -----------------------------------------------------------
# The ingestion tests produce to and consume from a real Kafka broker: tansu,
# a Kafka-compatible broker written in Rust. It is installed with cargo (a
# plain `cargo install tansu` has no storage engine, hence the features) and
# started on 127.0.0.1:9092 with its SQLite storage engine, keeping its
# database and log in target/tansu/ (LARDER_TANSU_DIR overrides it).

TANSU_VERSION=0.6.0
KAFKA_PORT=${LARDER_KAFKA_PORT:-9092}

kafka_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null
}

ensure_kafka() {
    local installed=""
    if kafka_answers; then
        say "kafka" "found running on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    if ! command -v tansu >/dev/null 2>&1; then
        if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
            # shellcheck source=/dev/null
            . "$HOME/.cargo/env"
        fi
        cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
        installed="installed tansu $TANSU_VERSION, "
    fi
    local dir
    dir=${LARDER_TANSU_DIR:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tansu"}
    mkdir -p "$dir"
    # tansu resolves sqlite://FILE against its working directory.
    (
        cd "$dir"
        nohup tansu broker \
            --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --storage-engine "sqlite://tansu.db" \
            --silent >broker.log 2>&1 </dev/null &
    )
    wait_for "kafka (tansu) on 127.0.0.1:$KAFKA_PORT (log: $dir/broker.log)" kafka_answers
    say "kafka" "${installed}started tansu on 127.0.0.1:$KAFKA_PORT (storage: $dir/tansu.db)"
}

services_main() {
    ensure_build_tools
    ensure_redis
    ensure_postgres
    ensure_mariadb
    ensure_kafka
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    services_main
fi
