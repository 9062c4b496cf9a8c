# Shared by bench/run.sh and bench/soak.sh (sourced, not run): logging, the PostgreSQL
# binaries, free ports, and a throwaway SCRAM cluster with a `bench` role and database.
# The sourcing script sets TMP (its throwaway directory) before calling start_cluster.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# Sets PGBIN, PGBENCH and PSQL (the newest installed PostgreSQL).
find_postgres() {
    PGBIN=""
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        PGBIN="$(pg_config --bindir)"
    else
        local dir
        for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
            if [ -x "$dir/initdb" ]; then PGBIN="$dir"; break; fi
        done
    fi
    [ -n "$PGBIN" ] || die "no PostgreSQL server binaries (apt-get install -y postgresql postgresql-contrib)"
    PGBENCH="$PGBIN/pgbench"
    [ -x "$PGBENCH" ] || PGBENCH="$(command -v pgbench || true)"
    [ -n "$PGBENCH" ] || die "pgbench not found (apt-get install -y postgresql-contrib)"
    PSQL="$PGBIN/psql"
    [ -x "$PSQL" ] || PSQL="$(command -v psql)"
    # As root, the server and PgBouncer run as the postgres user (both refuse to run as root).
    AS_PG=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
        AS_PG=(runuser -u postgres --)
    fi
}

# A port nobody listens on (checked with a connect attempt; good enough for a benchmark).
USED_PORTS=" "
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 12000))
        case "$USED_PORTS" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$port "
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

wait_port() { # port seconds what
    local i
    for i in $(seq $(($2 * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$3 did not listen on 127.0.0.1:$1 within $2 s"
}

# RSS of a process in KiB (VmRSS).
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

su_psql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PG_PORT" -U postgres -d postgres "$@"; }

# initdb in $TMP/data, start on 127.0.0.1:$PG_PORT (SCRAM, fsync off, $1 connections), and
# create the role bench (password $PASSWORD) owning database $DB. Sets PG_STARTED=1,
# VERIFIER (bench's SCRAM verifier) and BACKEND_URL.
start_cluster() { # max_connections
    log "initdb in $TMP/data (PostgreSQL binaries: $PGBIN)"
    "${AS_PG[@]}" "$PGBIN/initdb" -D "$TMP/data" -U postgres -E UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$TMP/initdb.log" 2>&1 \
        || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    cat >>"$TMP/data/postgresql.conf" <<CONF

# bench/lib.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
password_encryption = 'scram-sha-256'
max_connections = $1
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    cat >"$TMP/data/pg_hba.conf" <<CONF
local all all trust
host all all 127.0.0.1/32 scram-sha-256
CONF
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start >/dev/null
    PG_STARTED=1
    su_psql -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'" \
        -c "CREATE DATABASE $DB OWNER bench"
    VERIFIER="$(su_psql -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")"
    case "$VERIFIER" in SCRAM-SHA-256\$*) ;; *) die "bench's password is not a SCRAM verifier" ;; esac
    BACKEND_URL="postgres://bench:$PASSWORD@127.0.0.1:$PG_PORT/$DB?sslmode=disable"
}
