#!/usr/bin/env bash
# Scratch PostgreSQL and MariaDB servers on 127.0.0.1 for the DataStore tests.
#
#   scripts/databases.sh start [postgres] [mysql]   install (apt) if missing, init, start; print env exports
#   scripts/databases.sh stop  [postgres] [mysql]   stop (data kept, so the next start is quick)
#   scripts/databases.sh env                        print the exports for the servers running now
#   scripts/databases.sh clean                      stop both and delete their data
#
# Only the exports go to stdout, so `eval "$(scripts/databases.sh start)"` works;
# progress and reasons go to stderr. A database that cannot be installed or
# started is reported on stderr and left out of the exports; the exit status
# is 0 unless the command line is wrong. Works as root with no stdin (CI): the
# servers run as the `postgres` / `mysql` system users created by the packages.
#
# Exports: SPIRE_PY_TEST_POSTGRES (libpq key=value, as SPIRE's docs write it),
# SPIRE_PY_TEST_MYSQL (Go MySQL DSN, as SPIRE's docs write it), and
# SPIRE_PY_TEST_DB_DIR (this state dir; the restart tests call this script with it).
# The `spire` user may create databases named spire_* (one per integration test).
set -euo pipefail

DIR=${SPIRE_PY_TEST_DB_DIR:-/tmp/spire_py-databases}
# Below Linux's ephemeral range (32768-60999): a port in it can be held, in TIME-WAIT, by any
# client connection the run made (the fleet benchmark makes thousands), and the server's bind fails.
PG_PORT_DEFAULT=${SPIRE_PY_PG_PORT:-25432}
MY_PORT_DEFAULT=${SPIRE_PY_MYSQL_PORT:-23306}
DB_USER=spire
DB_PASSWORD=spire-test # loopback-only scratch servers
DB_NAME=spire_test
PG_DIR="$DIR/postgres"
MY_DIR="$DIR/mysql"

log() { echo "databases: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The port a server uses: kept in a file so restarts keep the connection strings valid.
choose_port() {
  local file=$1 want=$2 p
  if [ -s "$file" ]; then cat "$file"; return; fi
  p=$want
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p" >"$file"
  echo "$p"
}

apt_install() {
  if ! is_root; then
    log "$1 is not installed and installing it needs root"
    return 1
  fi
  log "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q "$@" </dev/null >>"$DIR/apt.log" 2>&1; then
    apt-get update -q </dev/null >>"$DIR/apt.log" 2>&1 || true
    apt-get install -y -q "$@" </dev/null >>"$DIR/apt.log" 2>&1 || {
      log "apt-get install $* failed (see $DIR/apt.log)"
      return 1
    }
  fi
}

# Run a command as the database's system user when root (postgres refuses root).
as_user() {
  local user=$1
  shift
  if is_root; then runuser -u "$user" -- "$@"; else "$@"; fi
}

# --- PostgreSQL --------------------------------------------------------------

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

pg_running() {
  [ -f "$PG_DIR/data/postmaster.pid" ] && as_user postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1
}

pg_psql() {
  as_user postgres "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/run" -p "$(cat "$PG_DIR/port")" -U postgres "$@"
}

pg_start() {
  [ -n "$(pg_bin)" ] || apt_install postgresql || return 1
  local bin port
  bin=$(pg_bin)
  [ -x "$bin/initdb" ] || { log "postgres: no initdb under /usr/lib/postgresql"; return 1; }
  mkdir -p "$PG_DIR/run"
  is_root && chown -R postgres:postgres "$PG_DIR"
  chmod 700 "$PG_DIR"
  port=$(choose_port "$PG_DIR/port" "$PG_PORT_DEFAULT")
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    log "postgres: initdb in $PG_DIR/data"
    as_user postgres "$bin/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$PG_DIR/initdb.log" 2>&1 || {
      log "postgres: initdb failed (see $PG_DIR/initdb.log)"
      return 1
    }
  fi
  local tries=0
  while ! pg_running; do
    log "postgres: starting on 127.0.0.1:$port"
    # Scratch data: durability settings off for speed; a clean stop still checkpoints.
    as_user postgres "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR/run -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
      start </dev/null >&2 && break
    # The remembered port taken meanwhile (a connection's TIME-WAIT on it): the next free one.
    tries=$((tries + 1))
    if [ "$tries" -lt 5 ] && tail -n 5 "$PG_DIR/server.log" | grep -q "Address already in use"; then
      rm -f "$PG_DIR/port"
      port=$(choose_port "$PG_DIR/port" $((port + 1)))
      continue
    fi
    log "postgres: start failed (see $PG_DIR/server.log)"
    return 1
  done
  pg_psql -d postgres >&2 <<SQL
SELECT 'CREATE ROLE $DB_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER')\gexec
ALTER ROLE $DB_USER WITH LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB_NAME')\gexec
SQL
}

pg_stop() {
  [ -n "$(pg_bin)" ] && [ -f "$PG_DIR/data/PG_VERSION" ] || return 0
  if pg_running; then
    log "postgres: stopping"
    as_user postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop </dev/null >&2
  fi
}

pg_env() {
  pg_running || return 0
  echo "export SPIRE_PY_TEST_POSTGRES='dbname=$DB_NAME user=$DB_USER password=$DB_PASSWORD host=127.0.0.1 port=$(cat "$PG_DIR/port") sslmode=disable'"
}

# --- MariaDB -----------------------------------------------------------------

my_bin() { command -v mariadbd 2>/dev/null || ls /usr/sbin/mariadbd 2>/dev/null || true; }
my_sock() { echo "$MY_DIR/run/mysqld.sock"; }

my_admin() { mariadb-admin --no-defaults --socket="$(my_sock)" -uroot "$@"; }
my_running() { [ -S "$(my_sock)" ] && my_admin ping >/dev/null 2>&1; }

my_start() {
  [ -n "$(my_bin)" ] || apt_install mariadb-server || return 1
  local bin port
  bin=$(my_bin)
  [ -n "$bin" ] || { log "mysql: mariadbd not found after install"; return 1; }
  mkdir -p "$MY_DIR/run"
  port=$(choose_port "$MY_DIR/port" "$MY_PORT_DEFAULT")
  is_root && chown -R mysql:mysql "$MY_DIR"
  chmod 700 "$MY_DIR"
  if [ ! -d "$MY_DIR/data/mysql" ]; then
    log "mysql: mariadb-install-db in $MY_DIR/data"
    mariadb-install-db --no-defaults --datadir="$MY_DIR/data" --user=mysql --skip-test-db \
      --auth-root-authentication-method=socket >"$MY_DIR/install.log" 2>&1 || {
      log "mysql: mariadb-install-db failed (see $MY_DIR/install.log)"
      return 1
    }
  fi
  if ! my_running; then
    log "mysql: starting on 127.0.0.1:$port"
    local user_opt=()
    is_root && user_opt=(--user=mysql)
    # setsid + redirections: the server must not hold the caller's stdout ($(...) would hang).
    setsid "$bin" --no-defaults "${user_opt[@]}" --datadir="$MY_DIR/data" --socket="$(my_sock)" \
      --pid-file="$MY_DIR/run/mysqld.pid" --log-error="$MY_DIR/server.log" \
      --bind-address=127.0.0.1 --port="$port" --skip-name-resolve --skip-log-bin \
      --max-connections=300 --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 \
      </dev/null >/dev/null 2>&1 &
    local i
    for i in $(seq 1 120); do
      my_running && break
      sleep 0.5
    done
    my_running || { log "mysql: did not start (see $MY_DIR/server.log)"; return 1; }
  fi
  mariadb --no-defaults --socket="$(my_sock)" -uroot >&2 <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`spire\\_%\`.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`spire\\_%\`.* TO '$DB_USER'@'localhost';
SQL
}

my_stop() {
  my_running || return 0
  log "mysql: stopping"
  my_admin shutdown >&2 || true
  local i
  for i in $(seq 1 120); do
    [ -e "$MY_DIR/run/mysqld.pid" ] || break
    sleep 0.5
  done
}

my_env() {
  my_running || return 0
  echo "export SPIRE_PY_TEST_MYSQL='$DB_USER:$DB_PASSWORD@tcp(127.0.0.1:$(cat "$MY_DIR/port"))/$DB_NAME?parseTime=true'"
}

# --- commands ----------------------------------------------------------------

names() {
  if [ $# -eq 0 ]; then echo postgres mysql; return; fi
  local n
  for n in "$@"; do
    case $n in
      postgres | mysql) echo "$n" ;;
      *) log "unknown database \"$n\"; use postgres or mysql"; exit 2 ;;
    esac
  done
}

print_env() {
  pg_env
  my_env
  echo "export SPIRE_PY_TEST_DB_DIR='$DIR'"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
mkdir -p "$DIR"
chmod 755 "$DIR" # the postgres and mysql users must reach their dirs below it
case $cmd in
  start)
    for n in $(names "$@"); do
      if [ "$n" = postgres ]; then
        pg_start || log "postgres unavailable: its tests will be skipped"
      else
        my_start || log "mysql unavailable: its tests will be skipped"
      fi
    done
    print_env
    ;;
  stop)
    for n in $(names "$@"); do
      if [ "$n" = postgres ]; then pg_stop; else my_stop; fi
    done
    ;;
  env) print_env ;;
  clean)
    pg_stop
    my_stop
    rm -rf "$PG_DIR" "$MY_DIR"
    ;;
  *)
    echo "usage: $0 start|stop [postgres] [mysql] | env | clean" >&2
    exit 2
    ;;
esac
