#!/usr/bin/env bash
# Side-by-side benchmark: PostgreSQL direct vs pgbastion (transparent, session pool,
# transaction pool) vs PgBouncer (session and transaction modes), optionally PgDog and
# pg_doorman.
#
# Usage (from the repository root):
#   bench/run.sh                  # full run: 3 x 10 s per target and scenario (≈ 80 min)
#   bench/run.sh --reps 1 --duration 8   # one interleaved pass (≈ 30 min with pg_doorman)
#   bench/run.sh --quick          # smoke run: 1 repetition of 3 s
#   bench/run.sh --reps N --duration S --no-build --bin PATH --keep --no-pgbouncer
#   bench/run.sh --only REGEX     # only the scenarios whose names match (grep -E)
#   bench/run.sh --targets REGEX  # only the targets whose names match (grep -E)
#   bench/run.sh --compare PATH   # also benchmark another pgbastion binary (candidate*)
#   bench/run.sh --pg-doorman PATH  # also pg_doorman (transaction mode, pool of 4)
#   bench/run.sh --pgdog PATH     # also PgDog (same; its config is untested, see README)
#   bench/run.sh --memory [--memory-clients N] [--memory-waves W]   # no benchmark: RSS per
#                                 # idle client of a transaction pool (10000 clients, 3 waves)
#   bench/run.sh --profile DIR    # no benchmark: perf profiles of pgbastion under
#                                 # pgbench -S -M extended -c 16 (see docs/profile.md);
#                                 # --profile-target pgb-txn profiles a pooled listener
#
# Everything runs in a throwaway directory: a fresh PostgreSQL cluster on a random port
# (127.0.0.1 only, SCRAM), one pgbastion with three listeners (transparent, session pool,
# transaction pool), one PgBouncer with a session and a transaction database, and the
# optional poolers in front of it. The targets are run interleaved, round-robin within each
# repetition, so that drift on a noisy machine hits them alike. See bench/README.md for what
# is measured and the latest results.
set -euo pipefail

REPS=3
DURATION=10
BUILD=1
KEEP=0
SCALE=10
PGBASTION=""
PROFILE=""
PROFILE_TARGET=pgbastion
NO_BOUNCER=0
COMPARE=""
ONLY=""
TARGET_RE=""
PGDOG=""
DOORMAN=""
MEMORY=0
MEMORY_CLIENTS=10000
MEMORY_WAVES=3

# Client counts of the select-only and TPC-B-like scenarios; the transaction pools have
# POOL_SIZE backends, the session pools one per client (see bench/README.md).
CLIENTS=(1 16 64 256)
POOL_SIZE=4
MEMORY_POOL_SIZE=20

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) REPS=1; DURATION=3 ;;
        --reps) REPS="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --bin) PGBASTION="$(realpath "$2")"; BUILD=0; shift ;;
        --keep) KEEP=1 ;;
        --no-pgbouncer) NO_BOUNCER=1 ;;
        --compare) COMPARE="$(realpath "$2")"; shift ;;
        --only) ONLY="$2"; shift ;;
        --targets) TARGET_RE="$2"; shift ;;
        --pgdog) PGDOG="$(realpath "$2")"; shift ;;
        --pg-doorman) DOORMAN="$(realpath "$2")"; shift ;;
        --memory) MEMORY=1 ;;
        --memory-clients) MEMORY_CLIENTS="$2"; shift ;;
        --memory-waves) MEMORY_WAVES="$2"; shift ;;
        --profile) PROFILE="$(mkdir -p "$2" && realpath "$2")"; shift ;;
        --profile-target) PROFILE_TARGET="$2"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for bin in "$PGDOG" "$DOORMAN" "$COMPARE"; do
    [ -z "$bin" ] || [ -x "$bin" ] || { echo "bench/run.sh: $bin is not an executable" >&2; exit 2; }
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/bench/lib.sh"

# --- 1. build ------------------------------------------------------------------------------
locate_pgbastion

# --- PostgreSQL binaries -------------------------------------------------------------------
find_postgres

PGBOUNCER="$(command -v pgbouncer || true)"
[ -n "$PGBOUNCER" ] || { [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer; } || true
[ "$NO_BOUNCER" = 0 ] || PGBOUNCER=""


# 256 clients, the proxies' backends and (--memory) 10,000 idle clients need descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- cleanup -------------------------------------------------------------------------------
TMP=""
PGBASTION_PID=""
CANDIDATE_PID=""
PGDOG_PID=""
DOORMAN_PID=""
CLIENTS_PID=""
BOUNCER_PIDFILE=""
PG_STARTED=0

cleanup() {
    local status=$?
    set +e
    local pid
    for pid in $CLIENTS_PID $PGBASTION_PID $CANDIDATE_PID $PGDOG_PID $DOORMAN_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    if [ -n "$BOUNCER_PIDFILE" ] && [ -s "$BOUNCER_PIDFILE" ]; then
        local bpid
        bpid="$(cat "$BOUNCER_PIDFILE")"
        kill "$bpid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
    fi
    stop_cluster
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$status" != 0 ]; then
            for f in "$TMP"/*.log; do
                [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
            done
        fi
        if [ "$KEEP" = 1 ]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$status"
}
make_tmp pgbastion-bench

# Ports below the ephemeral range (32768-60999), so that 10,000 client sockets cannot take them.
PG_PORT="$(free_port)"
BASTION_PORT="$(free_port)"
SESSION_PORT="$(free_port)"
TXN_PORT="$(free_port)"
BOUNCER_PORT="$(free_port)"
CANDIDATE_PORT="$(free_port)"
CAND_SESSION_PORT="$(free_port)"
CAND_TXN_PORT="$(free_port)"
PGDOG_PORT="$(free_port)"
DOORMAN_PORT="$(free_port)"
PASSWORD="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
DB=bench

export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
export PGUSER=bench PGDATABASE="$DB" PGPASSWORD="$PASSWORD"

MAX_CLIENTS=0
for c in "${CLIENTS[@]}"; do [ "$c" -gt "$MAX_CLIENTS" ] && MAX_CLIENTS=$c; done
# Session pools: one backend per client (see bench/README.md), closed 5 s after going idle.
SESSION_POOL_SIZE=$MAX_CLIENTS
# The direct cells' backends, plus a session pool's idle backends left from the cell
# before (and the one before that with short --duration), plus the transaction pools.
PG_MAX_CONNECTIONS=$((3 * MAX_CLIENTS + 100))

# --- 2. PostgreSQL -------------------------------------------------------------------------
start_cluster "$PG_MAX_CONNECTIONS"

# --- memory mode: idle clients through a transaction pool ----------------------------------
if [ "$MEMORY" = 1 ]; then
    command -v python3 >/dev/null 2>&1 || die "--memory needs python3"
    cat >"$TMP/memory.toml" <<EOF
[[listener]]
address = "127.0.0.1:$TXN_PORT"
mode = "pooled"
max_connections = $((MEMORY_CLIENTS + 100))

[[user]]
name = "bench"
password = "$PASSWORD"

[[route]]
auth = "scram"
backend = "$BACKEND_URL"
pool = { mode = "transaction", size = $MEMORY_POOL_SIZE, checkout_timeout = "60s" }

[log]
level = "warn"
EOF
    "$PGBASTION" --check-config "$TMP/memory.toml" >/dev/null
    log "starting pgbastion (transaction pool of $MEMORY_POOL_SIZE) on 127.0.0.1:$TXN_PORT"
    "$PGBASTION" --config "$TMP/memory.toml" 2>"$TMP/pgbastion.log" &
    PGBASTION_PID=$!
    wait_port "$TXN_PORT" 30 pgbastion
    backends() {
        su_psql -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench'"
    }
    # One client through the pool first, so the pool and its first backend exist.
    "$PSQL" -X -At -h 127.0.0.1 -p "$TXN_PORT" -c "SELECT 1" >/dev/null || die "cannot query through pgbastion"
    sleep 1
    RSS0="$(rss_kib "$PGBASTION_PID")"
    BACKENDS0="$(backends)"
    log "pgbastion RSS before: $RSS0 KiB; $BACKENDS0 backend(s)"
    wait_line() { # file prefix: wait until the client printed a line starting with prefix
        until grep -q "^$2" "$1"; do
            kill -0 "$CLIENTS_PID" 2>/dev/null || { cat "$1" >&2; die "the client died"; }
            sleep 0.5
        done
        grep -A5 "^$2" "$1" | grep -v '^[A-Z]' | sed 's/^/[bench]   /' >&2 || true
        grep "^$2" "$1"
    }
    # One wave: MEMORY_CLIENTS clients log in and stay idle (sample), run SELECT 1 once each
    # (sample), close (sample). Sets CONNECTED, QUERIED, RSS_IDLE, RSS_USED, RSS_CLOSED,
    # BACKENDS_IDLE, BACKENDS_USED.
    wave() { # number
        local dir="$TMP/wave$1"
        mkdir -p "$dir"
        log "wave $1: opening $MEMORY_CLIENTS idle clients (SCRAM) through the transaction pool"
        python3 "$ROOT/bench/idle_clients.py" 127.0.0.1 "$TXN_PORT" bench "$DB" "$MEMORY_CLIENTS" 200 \
            "$dir" >"$dir/clients.out" 2>&1 &
        CLIENTS_PID=$!
        CONNECTED="$(wait_line "$dir/clients.out" CONNECTED)"
        log "wave $1: $CONNECTED"
        sleep 2
        RSS_IDLE="$(rss_kib "$PGBASTION_PID")"
        BACKENDS_IDLE="$(backends)"
        log "wave $1: pgbastion RSS with the clients idle: $RSS_IDLE KiB; $BACKENDS_IDLE backend(s)"
        touch "$dir/query"
        QUERIED="$(wait_line "$dir/clients.out" QUERIED)"
        log "wave $1: $QUERIED"
        sleep 2
        RSS_USED="$(rss_kib "$PGBASTION_PID")"
        BACKENDS_USED="$(backends)"
        log "wave $1: pgbastion RSS after one SELECT 1 each: $RSS_USED KiB; $BACKENDS_USED backend(s)"
        touch "$dir/close"
        wait "$CLIENTS_PID" || { cat "$dir/clients.out" >&2; die "the client failed"; }
        CLIENTS_PID=""
        sleep 2
        RSS_CLOSED="$(rss_kib "$PGBASTION_PID")"
        log "wave $1: pgbastion RSS after they closed: $RSS_CLOSED KiB"
    }
    # Later waves show whether the memory of the clients before is reused (or leaked).
    ROWS=()
    for w in $(seq "$MEMORY_WAVES"); do
        wave "$w"
        if [ "$w" = 1 ]; then
            n="$(sed -n 's/^CONNECTED ok=\([0-9]*\).*/\1/p' <<<"$CONNECTED")"
            [ "$n" -gt 0 ] || die "no client connected"
            RSS_FIRST="$RSS_IDLE"
        fi
        ROWS+=("wave $w: $CONNECTED; $QUERIED|$RSS_IDLE|$RSS_USED|$RSS_CLOSED|$BACKENDS_IDLE|$BACKENDS_USED")
    done
    per() { awk -v a="$1" -v b="$RSS0" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }'; }
    echo
    echo "## Memory: $MEMORY_CLIENTS idle clients through a transaction pool of $MEMORY_POOL_SIZE"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); pgbastion: $PGBASTION (tree at start: $TREE)"
    echo "- machine: $(nproc) CPUs, $(uname -sr); $("$PGBIN/postgres" --version)"
    echo "- clients: bench/idle_clients.py (asyncio, raw sockets, SCRAM-SHA-256 logins), 200 logging in at a time;" \
        "$MEMORY_WAVES waves one after the other"
    for row in "${ROWS[@]}"; do echo "- ${row%%|*}"; done
    echo
    echo "| when | pgbastion VmRSS KiB | per client KiB (over before) | backends |"
    echo "|---|---:|---:|---:|"
    echo "| before (one client served, gone) | $RSS0 | - | $BACKENDS0 |"
    w=0
    for row in "${ROWS[@]}"; do
        w=$((w + 1))
        IFS='|' read -r _ idle used closed b_idle b_used <<<"$row"
        echo "| wave $w: $MEMORY_CLIENTS clients logged in, idle | $idle | $(per "$idle") | $b_idle |"
        echo "| wave $w: after one \`SELECT 1\` each, idle | $used | $(per "$used") | $b_used |"
        echo "| wave $w: all closed | $closed | $(per "$closed") | - |"
    done
    echo
    r="$(per "$RSS_FIRST")"
    ok="$(awk -v r="$r" 'BEGIN { print (r <= 16) ? "met" : "NOT met" }')"
    echo "- $n idle clients (wave 1): ${r} KiB RSS per client (target ≤ 16 KiB): **$ok**"
    exit 0
fi

log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" >"$TMP/pgbench-init.log" 2>&1 \
    || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
su_psql -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT"

# --- 3. pgbastion --------------------------------------------------------------------------
# Three listeners of one process: transparent (database bench), a session pool (database
# bench_session) and a transaction pool (database bench_txn; bench_cached: the same with
# cache_unnamed). The pooled routes are told apart by the database the client asks for; all
# log in to the backend database bench.
bastion_config() { # transparent_port session_port txn_port
    cat <<EOF
[[listener]]
address = "127.0.0.1:$1"

[[listener]]
address = "127.0.0.1:$2"
mode = "pooled"

[[listener]]
address = "127.0.0.1:$3"
mode = "pooled"

[[user]]
name = "bench"
password = "$PASSWORD"

[[route]]
match = { database = "${DB}_session" }
auth = "scram"
backend = "$BACKEND_URL"
pool = { mode = "session", size = $SESSION_POOL_SIZE, checkout_timeout = "60s", idle_timeout = "5s" }

[[route]]
match = { database = "${DB}_txn" }
auth = "scram"
backend = "$BACKEND_URL"
pool = { mode = "transaction", size = $POOL_SIZE, checkout_timeout = "60s" }

[[route]]
match = { database = "${DB}_cached" }
auth = "scram"
backend = "$BACKEND_URL"
pool = { mode = "transaction", size = $POOL_SIZE, checkout_timeout = "60s", cache_unnamed = true }

[[route]]
match = { database = "$DB" }
auth = "scram"
backend = "$BACKEND_URL"

[log]
level = "warn"
EOF
}
bastion_config "$BASTION_PORT" "$SESSION_PORT" "$TXN_PORT" >"$TMP/pgbastion.toml"
"$PGBASTION" --check-config "$TMP/pgbastion.toml" >/dev/null
log "starting pgbastion on 127.0.0.1:$BASTION_PORT (transparent), :$SESSION_PORT (session pool), :$TXN_PORT (transaction pool)"
"$PGBASTION" --config "$TMP/pgbastion.toml" 2>"$TMP/pgbastion.log" &
PGBASTION_PID=$!
wait_port "$BASTION_PORT" 30 pgbastion
if [ -n "$COMPARE" ]; then
    bastion_config "$CANDIDATE_PORT" "$CAND_SESSION_PORT" "$CAND_TXN_PORT" >"$TMP/candidate.toml"
    log "starting the candidate $COMPARE on 127.0.0.1:$CANDIDATE_PORT, :$CAND_SESSION_PORT, :$CAND_TXN_PORT"
    "$COMPARE" --config "$TMP/candidate.toml" 2>"$TMP/candidate.log" &
    CANDIDATE_PID=$!
    wait_port "$CANDIDATE_PORT" 30 candidate
fi

# --- 4. PgBouncer --------------------------------------------------------------------------
# One process, two databases: bench (session mode, one server connection per client) and
# bench_txn (transaction mode, POOL_SIZE server connections).
HAVE_BOUNCER=0
if [ -n "$PGBOUNCER" ]; then
    mkdir -p "$TMP/pgbouncer"
    printf '"bench" "%s"\n' "$VERIFIER" >"$TMP/pgbouncer/userlist.txt"
    cat >"$TMP/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB pool_mode=session pool_size=$SESSION_POOL_SIZE
${DB}_txn = host=127.0.0.1 port=$PG_PORT dbname=$DB pool_mode=transaction pool_size=$POOL_SIZE

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/pgbouncer/userlist.txt
max_client_conn = $((4 * MAX_CLIENTS))
default_pool_size = $POOL_SIZE
max_db_connections = 0
server_idle_timeout = 5
query_wait_timeout = 20
server_tls_sslmode = disable
logfile = $TMP/pgbouncer.log
pidfile = $TMP/pgbouncer/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
EOF
    touch "$TMP/pgbouncer.log"
    chmod 600 "$TMP/pgbouncer/userlist.txt"
    if [ "$(id -u)" = 0 ]; then chown -R postgres: "$TMP/pgbouncer" "$TMP/pgbouncer.log"; fi
    BOUNCER_PIDFILE="$TMP/pgbouncer/pgbouncer.pid"
    log "starting PgBouncer ($("$PGBOUNCER" --version | head -n 1)) on 127.0.0.1:$BOUNCER_PORT"
    "${AS_PG[@]}" "$PGBOUNCER" -d "$TMP/pgbouncer/pgbouncer.ini" >"$TMP/pgbouncer-start.log" 2>&1 \
        || { cat "$TMP/pgbouncer-start.log" >&2; die "pgbouncer did not start"; }
    wait_port "$BOUNCER_PORT" 30 pgbouncer
    HAVE_BOUNCER=1
else
    log "note: PgBouncer is skipped (not installed: apt-get install -y pgbouncer; or --no-pgbouncer)"
fi

# --- 4b. PgDog and pg_doorman (optional, binaries given by path) ---------------------------
if [ -n "$PGDOG" ]; then
    mkdir -p "$TMP/pgdog"
    cat >"$TMP/pgdog/pgdog.toml" <<EOF
[general]
host = "127.0.0.1"
port = $PGDOG_PORT
workers = 2
default_pool_size = $POOL_SIZE
min_pool_size = 0
pooler_mode = "transaction"
prepared_statements = "extended"
checkout_timeout = 60_000
query_timeout = 120_000
openmetrics_port = 0
log_level = "warn"
auth_type = "scram"
tls_verify = "disabled"

[admin]
name = "admin"
user = "admin"
password = "$PASSWORD"

[[databases]]
name = "$DB"
host = "127.0.0.1"
port = $PG_PORT
database_name = "$DB"
EOF
    cat >"$TMP/pgdog/users.toml" <<EOF
[[users]]
name = "bench"
database = "$DB"
password = "$PASSWORD"
pool_size = $POOL_SIZE
pooler_mode = "transaction"
EOF
    log "starting PgDog ($PGDOG) on 127.0.0.1:$PGDOG_PORT"
    "$PGDOG" --config "$TMP/pgdog/pgdog.toml" --users "$TMP/pgdog/users.toml" >"$TMP/pgdog.log" 2>&1 &
    PGDOG_PID=$!
    wait_port "$PGDOG_PORT" 30 pgdog
fi
if [ -n "$DOORMAN" ]; then
    mkdir -p "$TMP/pg_doorman"
    cat >"$TMP/pg_doorman/pg_doorman.toml" <<EOF
[general]
host = "127.0.0.1"
port = $DOORMAN_PORT
worker_threads = 2
max_connections = $((4 * MAX_CLIENTS))
query_wait_timeout = 20000
log_client_connections = false
log_client_disconnections = false
prepared_statements = true
admin_username = "admin"
admin_password = "$PASSWORD"
tls_mode = "disable"
server_tls_mode = "disable"

[pools.$DB]
server_host = "127.0.0.1"
server_port = $PG_PORT
pool_mode = "transaction"

[pools.$DB.users.0]
username = "bench"
password = "$VERIFIER"
server_username = "bench"
server_password = "$PASSWORD"
pool_size = $POOL_SIZE
EOF
    log "starting pg_doorman ($DOORMAN) on 127.0.0.1:$DOORMAN_PORT"
    "$DOORMAN" "$TMP/pg_doorman/pg_doorman.toml" >"$TMP/pg-doorman.log" 2>&1 &
    DOORMAN_PID=$!
    wait_port "$DOORMAN_PORT" 30 pg_doorman
fi

# --- targets -------------------------------------------------------------------------------
# name -> port, client database, pooling kind (direct, transparent, session, transaction).
declare -A PORT DBNAME KIND
ALL_TARGETS=()
add_target() { ALL_TARGETS+=("$1"); PORT[$1]=$2; DBNAME[$1]=$3; KIND[$1]=$4; }
add_target direct "$PG_PORT" "$DB" direct
add_target pgbastion "$BASTION_PORT" "$DB" transparent
add_target pgb-session "$SESSION_PORT" "${DB}_session" session
add_target pgb-txn "$TXN_PORT" "${DB}_txn" transaction
add_target pgb-cached "$TXN_PORT" "${DB}_cached" transaction
if [ -n "$COMPARE" ]; then
    add_target candidate "$CANDIDATE_PORT" "$DB" transparent
    add_target cand-session "$CAND_SESSION_PORT" "${DB}_session" session
    add_target cand-txn "$CAND_TXN_PORT" "${DB}_txn" transaction
fi
if [ "$HAVE_BOUNCER" = 1 ]; then
    add_target bouncer-session "$BOUNCER_PORT" "$DB" session
    add_target bouncer-txn "$BOUNCER_PORT" "${DB}_txn" transaction
fi
[ -n "$PGDOG" ] && add_target pgdog "$PGDOG_PORT" "$DB" transaction
[ -n "$DOORMAN" ] && add_target pg-doorman "$DOORMAN_PORT" "$DB" transaction

TARGETS=()
for t in "${ALL_TARGETS[@]}"; do
    if [ -z "$TARGET_RE" ] || grep -Eq -- "$TARGET_RE" <<<"$t"; then TARGETS+=("$t"); fi
done
[ "${#TARGETS[@]}" -gt 0 ] || die "--targets $TARGET_RE matches no target (${ALL_TARGETS[*]})"

# The PgBouncer target each target is compared with: the same pooling mode (transparent
# and direct against session mode, as one backend per client).
bouncer_of() {
    case "${KIND[$1]}" in
        transaction) echo bouncer-txn ;;
        *) echo bouncer-session ;;
    esac
}

# The process a target's proxy CPU time is read from (none for direct).
target_pid() {
    case "$1" in
        pgbastion | pgb-*) echo "$PGBASTION_PID" ;;
        candidate | cand-*) echo "$CANDIDATE_PID" ;;
        bouncer-*) cat "$BOUNCER_PIDFILE" 2>/dev/null || true ;;
        pgdog) echo "$PGDOG_PID" ;;
        pg-doorman) echo "$DOORMAN_PID" ;;
    esac
}

# The log a target's proxy writes to.
target_log() {
    case "$1" in
        pgbastion | pgb-*) echo "$TMP/pgbastion.log" ;;
        candidate | cand-*) echo "$TMP/candidate.log" ;;
        bouncer-*) echo "$TMP/pgbouncer.log" ;;
        pgdog) echo "$TMP/pgdog.log" ;;
        pg-doorman) echo "$TMP/pg-doorman.log" ;;
    esac
}

for t in "${TARGETS[@]}"; do
    got="$(PGDATABASE="${DBNAME[$t]}" "$PSQL" -X -At -h 127.0.0.1 -p "${PORT[$t]}" \
        -c "SELECT count(*) FROM pgbench_branches")" || die "cannot query through $t"
    [ "$got" = "$SCALE" ] || die "$t answered $got instead of $SCALE"
done
log "all targets answer: ${TARGETS[*]}"

# --- profile mode (docs/profile.md) --------------------------------------------------------
if [ -n "$PROFILE" ]; then
    command -v perf >/dev/null 2>&1 || die "perf is missing (apt-get install -y linux-perf)"
    case "$PROFILE_TARGET" in
        pgbastion | pgb-session | pgb-txn) ;;
        *) die "--profile-target must be pgbastion, pgb-session or pgb-txn" ;;
    esac
    load() { # seconds: the profiled load, against pgbastion, in the background
        PGDATABASE="${DBNAME[$PROFILE_TARGET]}" "$PGBENCH" -h 127.0.0.1 \
            -p "${PORT[$PROFILE_TARGET]}" -n -S -M extended -c 16 -j 2 -T "$1" \
            >>"$PROFILE/pgbench.txt" 2>&1 &
        LOAD_PID=$!
        sleep 2
    }
    # (1) the whole machine: who uses the two CPUs.
    log "profile 1/4: perf record -a -g (whole machine, ${DURATION} s)"
    load $((DURATION + 4))
    perf record -a -g -F 999 -o "$PROFILE/system.data" -- sleep "$DURATION" 2>>"$PROFILE/perf.log"
    wait "$LOAD_PID"
    # (2) pgbastion alone, frame-pointer call graphs (flat self time is what counts here).
    log "profile 2/4: perf record -g -p pgbastion (${DURATION} s)"
    load $((DURATION + 4))
    perf record -g -F 999 -p "$PGBASTION_PID" -o "$PROFILE/pgbastion.data" \
        -- sleep "$DURATION" 2>>"$PROFILE/perf.log"
    wait "$LOAD_PID"
    # (3) pgbastion alone, DWARF call graphs (Rust code has no frame pointers): inclusive time.
    log "profile 3/4: perf record --call-graph dwarf -p pgbastion (${DURATION} s)"
    load $((DURATION + 4))
    perf record --call-graph dwarf,16384 -F 499 -p "$PGBASTION_PID" \
        -o "$PROFILE/pgbastion-dwarf.data" -- sleep "$DURATION" 2>>"$PROFILE/perf.log"
    wait "$LOAD_PID"
    # (4) syscalls and CPU per query of every proxy target (perf stat -p over an exact
    # number of transactions), so the proxies' costs can be compared directly.
    : >"$PROFILE/syscalls-per-query.txt"
    for t in "${TARGETS[@]}"; do
        [ "$t" = direct ] && continue
        pid="$(target_pid "$t")"
        log "profile 4/4: perf stat of $t's syscalls over 16 x 2000 transactions"
        perf stat -x, -o "$PROFILE/syscalls-$t.csv" -p "$pid" \
            -e syscalls:sys_enter_sendto -e syscalls:sys_enter_recvfrom \
            -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_ctl \
            -e syscalls:sys_enter_futex -e syscalls:sys_enter_write \
            -e syscalls:sys_enter_read -e syscalls:sys_enter_writev -e context-switches -e task-clock \
            2>>"$PROFILE/perf.log" &
        STAT_PID=$!
        sleep 1
        PGDATABASE="${DBNAME[$t]}" "$PGBENCH" -h 127.0.0.1 -p "${PORT[$t]}" -n -S -M extended \
            -c 16 -j 2 -t 2000 >>"$PROFILE/pgbench.txt" 2>&1
        kill -INT "$STAT_PID"
        wait "$STAT_PID" || true
        {
            echo "$t (pgbench -S -M extended -c 16, 32000 queries):"
            awk -F, -v tx=32000 '$3 != "" && $1 ~ /^[0-9]/ {
                if ($3 == "task-clock") printf "  %-32s %10.0f ms  %6.1f µs CPU per query\n", $3, $1, $1 * 1000 / tx
                else printf "  %-32s %10d  %6.2f per query\n", $3, $1, $1 / tx }' "$PROFILE/syscalls-$t.csv"
        } >>"$PROFILE/syscalls-per-query.txt"
    done
    log "writing reports"
    perf report -i "$PROFILE/system.data" --stdio --no-children --sort comm -g none \
        >"$PROFILE/system-by-command.txt" 2>/dev/null
    perf report -i "$PROFILE/system.data" --stdio --no-children --sort comm,dso -g none \
        >"$PROFILE/system-by-dso.txt" 2>/dev/null
    perf report -i "$PROFILE/pgbastion.data" --stdio --no-children --sort sym -g none \
        >"$PROFILE/pgbastion-self.txt" 2>/dev/null
    perf report -i "$PROFILE/pgbastion.data" --stdio --no-children --sort dso -g none \
        >"$PROFILE/pgbastion-by-dso.txt" 2>/dev/null
    perf report -i "$PROFILE/pgbastion.data" --stdio --children --sort sym -g none \
        >"$PROFILE/pgbastion-children-fp.txt" 2>/dev/null
    perf report -i "$PROFILE/pgbastion.data" --stdio --no-children --sort sym \
        -g caller,0.5,callee,function,percent --percent-limit 15 \
        >"$PROFILE/pgbastion-kernel-callers.txt" 2>/dev/null
    perf report -i "$PROFILE/pgbastion-dwarf.data" --stdio --children --sort sym -g none \
        >"$PROFILE/pgbastion-children.txt" 2>/dev/null
    perf report -i "$PROFILE/pgbastion-dwarf.data" --stdio --no-children --sort sym \
        -g caller,0.5,callee --percent-limit 2 >"$PROFILE/pgbastion-callers.txt" 2>/dev/null
    if [ "$(id -u)" = 0 ] && [ -n "${SUDO_UID:-}" ]; then chown -R "$SUDO_UID" "$PROFILE"; fi
    log "profiles and reports in $PROFILE"
    grep -E '^(tps|latency average)' "$PROFILE/pgbench.txt" >&2 || true
    cat "$PROFILE/syscalls-per-query.txt" >&2
    exit 0
fi

# --- 5. scenarios --------------------------------------------------------------------------
# name|pgbench arguments
SCENARIOS=()
for workload in select tpcb; do
    for proto in simple extended prepared; do
        for c in "${CLIENTS[@]}"; do
            j=2
            [ "$c" = 1 ] && j=1
            case "$workload" in
                select) SCENARIOS+=("select-$proto-c$c|-S -M $proto -c $c -j $j") ;;
                tpcb) SCENARIOS+=("tpcb-$proto-c$c|-b tpcb-like -M $proto -c $c -j $j") ;;
            esac
        done
    done
done
SCENARIOS+=("churn-c16|-C -S -M simple -c 16 -j 2")
if [ -n "$ONLY" ]; then
    SELECTED=()
    for sc in "${SCENARIOS[@]}"; do
        if grep -Eq -- "$ONLY" <<<"${sc%%|*}"; then SELECTED+=("$sc"); fi
    done
    [ "${#SELECTED[@]}" -gt 0 ] || die "--only $ONLY matches no scenario"
    SCENARIOS=("${SELECTED[@]}")
fi

RESULTS="$TMP/results.tsv"
FAILDIR="$TMP/failures"
mkdir -p "$FAILDIR"
: >"$RESULTS"

# CPU time (user + system, in clock ticks) a process has used so far; empty for targets
# that are not one process (direct: PostgreSQL forks a backend per connection).
cpu_ticks() {
    local pid
    pid="$(target_pid "$1")"
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 0
    # Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
    sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'
}
CLK_TCK="$(getconf CLK_TCK)"

# One pgbench run. Prints "tps latency_ms proxy_cpu_us_per_tx", or "fail" when pgbench
# failed (non-zero exit, aborted clients, failed transactions, or no end within the time
# limit); the failure's pgbench output and the proxy's new log lines go to $FAILDIR/LABEL.
run_pgbench() { # label target seconds args...
    local label=$1 target=$2 secs=$3 out before after rc=0 logf lines=0
    shift 3
    logf="$(target_log "$target")"
    [ -n "$logf" ] && [ -f "$logf" ] && lines="$(wc -l <"$logf")"
    before="$(cpu_ticks "$target")"
    out="$(PGDATABASE="${DBNAME[$target]}" timeout -k 10 $((2 * secs + 120)) \
        "$PGBENCH" -h 127.0.0.1 -p "${PORT[$target]}" -n -T "$secs" "$@" 2>&1)" || rc=$?
    after="$(cpu_ticks "$target")"
    if [ "$rc" != 0 ] || grep -Eq '^number of failed transactions: [1-9]' <<<"$out" \
        || grep -Eq '^number of transactions actually processed: 0$' <<<"$out"; then
        {
            echo "pgbench -h 127.0.0.1 -p ${PORT[$target]} -d ${DBNAME[$target]} -n -T $secs $*"
            case "$rc" in
                0) echo "(exit status 0, failed transactions or none at all: connecting took the whole run?)" ;;
                124 | 137) echo "(no end within $((2 * secs + 120)) s: killed by timeout, exit status $rc)" ;;
                *) echo "(exit status $rc)" ;;
            esac
            echo "$out"
            if [ -n "$logf" ] && [ -f "$logf" ]; then
                echo "--- new lines of $(basename "$logf") during the run:"
                tail -n +$((lines + 1)) "$logf" | head -n 200
            fi
        } >"$FAILDIR/$label"
        echo fail
        return 0
    fi
    local tps lat txs conn cpu=-
    tps="$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)"
    conn="$(echo "$out" | sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' | head -n 1)"
    lat="$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' | head -n 1)"
    txs="$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')"
    if [ -z "$tps" ] || [ -z "$lat" ] || [ -z "$txs" ]; then
        echo "$out" >&2
        die "cannot parse pgbench output"
    fi
    if [ -n "$before" ] && [ -n "$after" ] && [ "$txs" -gt 0 ]; then
        cpu="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v n="$txs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')"
    fi
    echo "$tps $lat $cpu ${conn:--}"
}

log "warm-up"
for t in "${TARGETS[@]}"; do
    [ "$(run_pgbench "warmup-$t" "$t" 2 -S -c 4 -j 2)" != fail ] \
        || { cat "$FAILDIR/warmup-$t" >&2; die "the warm-up against $t failed"; }
done

NT=${#TARGETS[@]}
TOTAL=$((${#SCENARIOS[@]} * REPS * NT))
N=0
STARTED=$SECONDS
log "running ${#SCENARIOS[@]} scenarios x $REPS repetition(s) x $NT targets x ${DURATION} s"
for sc in "${SCENARIOS[@]}"; do
    name="${sc%%|*}"
    # shellcheck disable=SC2206
    args=(${sc#*|})
    # pgbench's -T includes the initial connections, and it leaves their time out of its
    # TPS: 256 SCRAM logins take 1-4 s here, so those runs get more time (1 s per 64 clients).
    clients="$(sed -n 's/.*-c \([0-9]*\).*/\1/p' <<<"${sc#*|}")"
    secs=$((DURATION + clients / 64))
    for rep in $(seq "$REPS"); do
        # Round-robin, rotating the starting target each repetition.
        for i in $(seq 0 $((NT - 1))); do
            t="${TARGETS[$(((i + rep - 1) % NT))]}"
            N=$((N + 1))
            res="$(run_pgbench "$name-$t-$rep" "$t" "$secs" "${args[@]}")"
            if [ "$res" = fail ]; then
                printf '%s\t%s\t%s\tfail\t-\t-\n' "$name" "$t" "$rep" >>"$RESULTS"
                log "$(printf '[%3d/%d] %-20s %-15s rep %d: FAILED (%s)' "$N" "$TOTAL" "$name" "$t" "$rep" \
                    "$(grep -m1 -iE 'error|fatal|aborted|timeout' "$FAILDIR/$name-$t-$rep" | cut -c1-160)")"
                continue
            fi
            read -r tps lat cpu conn <<<"$res"
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$t" "$rep" "$tps" "$lat" "$cpu" >>"$RESULTS"
            log "$(printf '[%3d/%d] %-20s %-15s rep %d: %10.1f tps  %8.3f ms  proxy CPU %s µs/tx  connecting %s ms  (%d s)' \
                "$N" "$TOTAL" "$name" "$t" "$rep" "$tps" "$lat" "$cpu" "$conn" $((SECONDS - STARTED)))"
        done
    done
done

# --- 6. report -----------------------------------------------------------------------------
# Medians per (scenario, target) over the repetitions that did not fail: TPS, average
# latency, proxy CPU; and how many repetitions failed.
SUMMARY="$TMP/summary.tsv"
sort -t $'\t' -k1,1 -k2,2 "$RESULTS" | awk -F'\t' '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function flush() {
        if (key == "") return
        printf "%s\t%s\t%s\t%s\t%d\t%d\n", key,
            (n ? sprintf("%.1f", median(tp, n)) : "-"), (n ? sprintf("%.4f", median(la, n)) : "-"),
            (nc ? sprintf("%.1f", median(cp, nc)) : "-"), n + nf, nf
    }
    { k = $1 "\t" $2; if (k != key) { flush(); key = k; n = 0; nc = 0; nf = 0; delete tp; delete la; delete cp }
      if ($4 == "fail") { nf++; next }
      n++; tp[n] = $4 + 0; la[n] = $5 + 0; if ($6 != "-") { nc++; cp[nc] = $6 + 0 } }
    END { flush() }' >"$SUMMARY"

declare -A TPS LAT CPU FAILS RUNS
while IFS=$'\t' read -r sc t tps lat cpu runs fails; do
    TPS["$sc|$t"]="$tps"
    LAT["$sc|$t"]="$lat"
    CPU["$sc|$t"]="$cpu"
    RUNS["$sc|$t"]="$runs"
    FAILS["$sc|$t"]="$fails"
done <"$SUMMARY"

# A cell's TPS, or nothing when it failed (any repetition) or did not run.
ok_tps() { if [ "${FAILS[$1]:-1}" = 0 ]; then echo "${TPS[$1]}"; fi; }
added_us() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", (1 / a - 1 / b) * 1e6 }'; }
ratio() { # a b: a / b, or "-" when either is missing
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
    else
        echo "-"
    fi
}
cell_text() { # key: "fails" / "fails (k of n)" / the TPS
    local k=$1
    if [ -z "${RUNS[$k]:-}" ]; then
        echo "-"
    elif [ "${FAILS[$k]}" = "${RUNS[$k]}" ]; then
        echo "fails"
    elif [ "${FAILS[$k]}" != 0 ]; then
        echo "fails ($((FAILS[$k])) of ${RUNS[$k]})"
    else
        printf '%.0f' "${TPS[$k]}"
    fi
}

MD="$TMP/table.md"
{
    echo "| scenario | target | TPS (median) | avg latency ms | vs direct | vs PgBouncer, same mode | added µs/query vs direct | proxy CPU µs/tx |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
} >"$MD"
printf '\n%-20s %-15s %12s %10s %9s %12s %12s %10s\n' scenario target "TPS(med)" "lat ms" "vs direct" "vs bouncer" "+µs/query" "CPU µs/tx"
printf '%s\n' "$(printf '%.0s-' $(seq 107))"
for sc in "${SCENARIOS[@]}"; do
    name="${sc%%|*}"
    for t in "${TARGETS[@]}"; do
        k="$name|$t"
        [ -n "${RUNS[$k]:-}" ] || continue
        tps="$(ok_tps "$k")"
        cell="$(cell_text "$k")"
        lat="-"
        [ -n "$tps" ] && lat="$(printf '%.3f' "${LAT[$k]}")"
        vd="$(ratio "$tps" "$(ok_tps "$name|direct")")"
        vb="$(ratio "$tps" "$(ok_tps "$name|$(bouncer_of "$t")")")"
        added="-"
        case "$name" in
            *-c1)
                # One client: one transaction at a time, so the time per transaction is
                # 1/TPS (finer than pgbench's latency, which is printed in whole µs).
                direct_tps="$(ok_tps "$name|direct")"
                if [ "$t" != direct ] && [ -n "$tps" ] && [ -n "$direct_tps" ]; then
                    added="$(added_us "$tps" "$direct_tps")"
                fi
                ;;
        esac
        cpu="-"
        [ -n "$tps" ] && cpu="${CPU[$k]}"
        printf '%-20s %-15s %12s %10s %9s %12s %12s %10s\n' "$name" "$t" "$cell" "$lat" "$vd" "$vb" "$added" "$cpu"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$t" "$cell" "$lat" "$vd" "$vb" "$added" "$cpu" >>"$MD"
    done
done

# The same TPS, one row per scenario (TPS, and × direct in parentheses).
COMPACT="$TMP/compact.md"
{
    printf '| scenario |'
    for t in "${TARGETS[@]}"; do printf ' %s |' "$t"; done
    printf '\n|---|'
    for _ in "${TARGETS[@]}"; do printf -- '---:|'; done
    printf '\n'
    for sc in "${SCENARIOS[@]}"; do
        name="${sc%%|*}"
        printf '| %s |' "$name"
        for t in "${TARGETS[@]}"; do
            k="$name|$t"
            tps="$(ok_tps "$k")"
            if [ -n "$tps" ] && [ "$t" != direct ] && [ -n "$(ok_tps "$name|direct")" ]; then
                printf ' %s (%s) |' "$(cell_text "$k")" "$(ratio "$tps" "$(ok_tps "$name|direct")")"
            else
                printf ' %s |' "$(cell_text "$k")"
            fi
        done
        printf '\n'
    done
} >"$COMPACT"

# The targets from the issue, checked against this run (pgbastion's pools only).
why_missing() { # cell keys ("scenario|target"): why a ratio between them cannot be given
    local k why=()
    for k in "$@"; do
        if [ -z "${RUNS[$k]:-}" ]; then
            why+=("${k/|/ } did not run")
        elif [ "${FAILS[$k]}" != 0 ]; then
            why+=("${k/|/ } fails")
        fi
    done
    local IFS=";"
    echo "${why[*]}"
}
check() { # label numerator_key denominator_key threshold: TPS ratio >= threshold?
    local r ok
    r="$(ratio "$(ok_tps "$2")" "$(ok_tps "$3")")"
    if [ "$r" = "-" ]; then
        echo "- $1: not measured ($(why_missing "$2" "$3" | sed 's/;/; /g'))"
        return
    fi
    ok="$(awk -v r="$r" -v t="$4" 'BEGIN { print (r >= t) ? "met" : "NOT met" }')"
    echo "- $1: ${r}× (target ≥ $4×): **$ok**"
}
verdicts() {
    local t b proto c name e p workload
    for t in "${TARGETS[@]}"; do
        [ "${KIND[$t]}" = transaction ] || continue
        case "$t" in pgb-* | cand-*) ;; *) continue ;; esac
        b="$(bouncer_of "$t")"
        for proto in simple extended prepared; do
            name="select-$proto-c64"
            [ -n "${RUNS[$name|$t]:-}" ] || continue
            check "$name: $t vs $b" "$name|$t" "$name|$b" 1.25
            check "$name: $t vs direct" "$name|$t" "$name|direct" 1.0
        done
        for workload in select tpcb; do
            for proto in simple extended prepared; do
                name="$workload-$proto-c16"
                [ -n "${RUNS[$name|$t]:-}" ] || continue
                check "$name: $t vs $b" "$name|$t" "$name|$b" 1.2
            done
        done
        for workload in select tpcb; do
            for c in "${CLIENTS[@]}"; do
                p="$workload-prepared-c$c"
                e="$workload-extended-c$c"
                [ -n "${RUNS[$p|$t]:-}" ] || continue
                if [ "${FAILS[$p|$t]}" != 0 ]; then
                    echo "- $p: $t: **fails** in ${FAILS[$p|$t]} of ${RUNS[$p|$t]} repetition(s) (target: works)"
                    continue
                fi
                check "$p: $t, -M prepared vs -M extended" "$p|$t" "$e|$t" 0.9
            done
        done
    done
    for t in "${TARGETS[@]}"; do
        case "$t" in pgb-* | cand-*) ;; *) continue ;; esac
        [ -n "${RUNS[churn-c16|$t]:-}" ] || continue
        b="$(bouncer_of "$t")"
        check "churn-c16: $t vs $b" "churn-c16|$t" "churn-c16|$b" 1.2
    done
    echo "- 10,000 idle clients ≤ 16 KiB RSS per client: measured by \`bench/run.sh --memory\`"
}

BOUNCER_VERSION="not installed"
[ "$HAVE_BOUNCER" = 1 ] && BOUNCER_VERSION="$("$PGBOUNCER" --version | head -n 1)"
echo
echo "## Results"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); pgbastion: $PGBASTION (tree at start: $TREE)"
echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(uname -sr)"
echo "- $("$PGBIN/postgres" --version); $BOUNCER_VERSION; $("$PGBENCH" --version)"
echo "- $REPS repetition(s) of ${DURATION} s per target and scenario, interleaved; pgbench scale $SCALE;" \
    "transaction pools of $POOL_SIZE, session pools of $SESSION_POOL_SIZE; $((SECONDS - STARTED)) s of runs"
[ -n "$PGDOG" ] && echo "- PgDog: $PGDOG"
[ -n "$DOORMAN" ] && echo "- pg_doorman: $DOORMAN"
echo
cat "$MD"
echo
echo "TPS by scenario (× direct):"
echo
cat "$COMPACT"
echo
echo "Targets:"
echo
verdicts
if [ -n "$(ls -A "$FAILDIR")" ]; then
    echo
    echo "Failed runs (pgbench's errors; the proxy's log lines during the run):"
    for f in "$FAILDIR"/*; do
        echo
        echo "- $(basename "$f"): $(sed -n 2p "$f")"
        grep -m3 -iE 'error|fatal|abort|timeout' "$f" | sed 's/^/    /' || true
        sed -n '/^--- new lines/,$p' "$f" | sed -n '2,6p' | sed 's/^/    log: /'
    done
fi
