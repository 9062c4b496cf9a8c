#!/usr/bin/env bash
# Side-by-side benchmark: PostgreSQL direct vs pgbastion vs PgBouncer (session mode).
#
# Usage (from the repository root):
#   bench/run.sh                 # full run: 3 repetitions of 10 s per target and scenario
#   bench/run.sh --quick         # smoke run: 1 repetition of 3 s
#   bench/run.sh --reps N --duration S --no-build --bin PATH --keep --no-pgbouncer
#   bench/run.sh --compare PATH  # also benchmark another pgbastion binary ("candidate")
#   bench/run.sh --only REGEX    # only the scenarios whose names match (grep -E)
#   bench/run.sh --profile DIR   # no benchmark: perf profiles of pgbastion under
#                                # pgbench -S -M extended -c 16 (see docs/profile.md)
#
# Everything runs in a throwaway directory: a fresh PostgreSQL cluster on a random port
# (127.0.0.1 only, SCRAM), pgbastion and (when installed) PgBouncer in front of it. The
# targets are run interleaved, round-robin within each repetition, so that drift on a noisy
# machine hits them alike. See bench/README.md for what is measured and the latest results.
set -euo pipefail

REPS=3
DURATION=10
BUILD=1
KEEP=0
SCALE=10
PGBASTION=""
PROFILE=""
NO_BOUNCER=0
COMPARE=""
ONLY=""

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
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
        --profile) PROFILE="$(mkdir -p "$2" && realpath "$2")"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TREE="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || TREE="$TREE, crates/ modified"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# --- 1. build ------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p pgbastion"
    cargo build --release -p pgbastion
fi
[ -n "$PGBASTION" ] || PGBASTION="$ROOT/target/release/pgbastion"
[ -x "$PGBASTION" ] || die "$PGBASTION is missing (run without --no-build)"

# --- PostgreSQL binaries -------------------------------------------------------------------
PGBIN=""
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    PGBIN="$(pg_config --bindir)"
else
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ]; then PGBIN="$dir"; break; fi
    done
fi
[ -n "$PGBIN" ] || die "no PostgreSQL server binaries (apt-get install -y postgresql postgresql-contrib)"
PGBENCH="$PGBIN/pgbench"
[ -x "$PGBENCH" ] || PGBENCH="$(command -v pgbench || true)"
[ -n "$PGBENCH" ] || die "pgbench not found (apt-get install -y postgresql-contrib)"
PSQL="$PGBIN/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql)"

PGBOUNCER="$(command -v pgbouncer || true)"
[ -n "$PGBOUNCER" ] || { [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer; } || true
[ "$NO_BOUNCER" = 0 ] || PGBOUNCER=""

# As root, the server and PgBouncer run as the postgres user (both refuse to run as root).
AS_PG=()
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
    AS_PG=(runuser -u postgres --)
fi

# --- cleanup -------------------------------------------------------------------------------
TMP=""
PGBASTION_PID=""
CANDIDATE_PID=""
BOUNCER_PIDFILE=""
PG_STARTED=0

cleanup() {
    local status=$?
    set +e
    local pid
    for pid in $PGBASTION_PID $CANDIDATE_PID; do
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
    if [ "$PG_STARTED" = 1 ]; then
        "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" -m fast -w stop >/dev/null 2>&1
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$KEEP" = 1 ] || [ "$status" != 0 ]; then
            if [ "$status" != 0 ]; then
                for f in "$TMP"/*.log; do
                    [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
                done
            fi
        fi
        if [ "$KEEP" = 1 ]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP="$(mktemp -d "${TMPDIR:-/tmp}/pgbastion-bench.XXXXXX")"
chmod 755 "$TMP"
if [ "$(id -u)" = 0 ]; then chown postgres: "$TMP"; fi

# A port nobody listens on (checked with a connect attempt; good enough for a benchmark).
USED_PORTS=" "
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
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

PG_PORT="$(free_port)"
BASTION_PORT="$(free_port)"
BOUNCER_PORT="$(free_port)"
CANDIDATE_PORT="$(free_port)"
PASSWORD="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
DB=bench

export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
export PGUSER=bench PGDATABASE="$DB" PGPASSWORD="$PASSWORD"

# --- 2. PostgreSQL -------------------------------------------------------------------------
log "initdb in $TMP/data (PostgreSQL binaries: $PGBIN)"
"${AS_PG[@]}" "$PGBIN/initdb" -D "$TMP/data" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
cat >>"$TMP/data/postgresql.conf" <<EOF

# bench/run.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
password_encryption = 'scram-sha-256'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
cat >"$TMP/data/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF
log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start >/dev/null
PG_STARTED=1

su_psql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PG_PORT" -U postgres -d postgres "$@"; }
su_psql -c "CREATE ROLE bench LOGIN PASSWORD '$PASSWORD'" \
    -c "CREATE DATABASE $DB OWNER bench"
VERIFIER="$(su_psql -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")"
case "$VERIFIER" in SCRAM-SHA-256\$*) ;; *) die "bench's password is not a SCRAM verifier" ;; esac

log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" >"$TMP/pgbench-init.log" 2>&1 \
    || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }
su_psql -d "$DB" -c "VACUUM ANALYZE" -c "CHECKPOINT"

# --- 3. pgbastion --------------------------------------------------------------------------
cat >"$TMP/pgbastion.toml" <<EOF
[[listener]]
address = "127.0.0.1:$BASTION_PORT"

[[user]]
name = "bench"
password = "$PASSWORD"

[[route]]
auth = "scram"
backend = "postgres://bench:$PASSWORD@127.0.0.1:$PG_PORT/$DB?sslmode=disable"

[log]
level = "warn"
EOF
"$PGBASTION" --check-config "$TMP/pgbastion.toml" >/dev/null
log "starting pgbastion on 127.0.0.1:$BASTION_PORT"
"$PGBASTION" --config "$TMP/pgbastion.toml" 2>"$TMP/pgbastion.log" &
PGBASTION_PID=$!
wait_port "$BASTION_PORT" 30 pgbastion
if [ -n "$COMPARE" ]; then
    sed "s/127.0.0.1:$BASTION_PORT/127.0.0.1:$CANDIDATE_PORT/" "$TMP/pgbastion.toml" >"$TMP/candidate.toml"
    log "starting the candidate $COMPARE on 127.0.0.1:$CANDIDATE_PORT"
    "$COMPARE" --config "$TMP/candidate.toml" 2>"$TMP/candidate.log" &
    CANDIDATE_PID=$!
    wait_port "$CANDIDATE_PORT" 30 candidate
fi

# --- 4. PgBouncer --------------------------------------------------------------------------
HAVE_BOUNCER=0
if [ -n "$PGBOUNCER" ]; then
    mkdir -p "$TMP/pgbouncer"
    printf '"bench" "%s"\n' "$VERIFIER" >"$TMP/pgbouncer/userlist.txt"
    cat >"$TMP/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $TMP/pgbouncer/userlist.txt
pool_mode = session
max_client_conn = 500
default_pool_size = 100
max_db_connections = 0
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

# --- targets -------------------------------------------------------------------------------
TARGETS=(direct pgbastion)
[ -n "$COMPARE" ] && TARGETS+=(candidate)
declare -A PORT=([direct]="$PG_PORT" [pgbastion]="$BASTION_PORT" [pgbouncer]="$BOUNCER_PORT"
    [candidate]="$CANDIDATE_PORT")
[ "$HAVE_BOUNCER" = 1 ] && TARGETS+=(pgbouncer)

for t in "${TARGETS[@]}"; do
    got="$("$PSQL" -X -At -h 127.0.0.1 -p "${PORT[$t]}" -c "SELECT count(*) FROM pgbench_branches")" \
        || die "cannot query through $t"
    [ "$got" = "$SCALE" ] || die "$t answered $got instead of $SCALE"
done
log "all targets answer: ${TARGETS[*]}"

# --- profile mode (docs/profile.md) --------------------------------------------------------
if [ -n "$PROFILE" ]; then
    command -v perf >/dev/null 2>&1 || die "perf is missing (apt-get install -y linux-perf)"
    load() { # seconds: the profiled load, against pgbastion, in the background
        "$PGBENCH" -h 127.0.0.1 -p "$BASTION_PORT" -n -S -M extended -c 16 -j 2 -T "$1" \
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
    # (4) syscalls per query: count pgbastion's syscalls over an exact number of transactions.
    # (4) syscalls and CPU per query, pgbastion and PgBouncer alike (perf stat -p over an
    # exact number of transactions), so the two proxies' costs can be compared directly.
    : >"$PROFILE/syscalls-per-query.txt"
    for t in "${TARGETS[@]}"; do
        [ "$t" = direct ] && continue
        case "$t" in
            pgbastion) pid="$PGBASTION_PID" ;;
            candidate) pid="$CANDIDATE_PID" ;;
            pgbouncer) pid="$(cat "$BOUNCER_PIDFILE")" ;;
        esac
        log "profile 4/4: perf stat of $t's syscalls over 16 x 2000 transactions"
        perf stat -x, -o "$PROFILE/syscalls-$t.csv" -p "$pid" \
            -e syscalls:sys_enter_sendto -e syscalls:sys_enter_recvfrom \
            -e syscalls:sys_enter_epoll_wait -e syscalls:sys_enter_epoll_ctl \
            -e syscalls:sys_enter_futex -e syscalls:sys_enter_write \
            -e syscalls:sys_enter_read -e context-switches -e task-clock \
            2>>"$PROFILE/perf.log" &
        STAT_PID=$!
        sleep 1
        "$PGBENCH" -h 127.0.0.1 -p "${PORT[$t]}" -n -S -M extended -c 16 -j 2 -t 2000 \
            >>"$PROFILE/pgbench.txt" 2>&1
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
SCENARIOS=(
    "select-simple-c1|-S -M simple -c 1 -j 1"
    "select-simple-c16|-S -M simple -c 16 -j 2"
    "select-simple-c64|-S -M simple -c 64 -j 2"
    "select-extended-c1|-S -M extended -c 1 -j 1"
    "select-extended-c16|-S -M extended -c 16 -j 2"
    "select-extended-c64|-S -M extended -c 64 -j 2"
    "churn-c16|-C -S -M simple -c 16 -j 2"
)
if [ -n "$ONLY" ]; then
    SELECTED=()
    for sc in "${SCENARIOS[@]}"; do
        if grep -Eq -- "$ONLY" <<<"${sc%%|*}"; then SELECTED+=("$sc"); fi
    done
    [ "${#SELECTED[@]}" -gt 0 ] || die "--only $ONLY matches no scenario"
    SCENARIOS=("${SELECTED[@]}")
fi

RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# CPU time (user + system, in clock ticks) a process has used so far; empty for targets
# that are not one process (direct: PostgreSQL forks a backend per connection).
cpu_ticks() {
    local pid=""
    case "$1" in
        pgbastion) pid="$PGBASTION_PID" ;;
        candidate) pid="$CANDIDATE_PID" ;;
        pgbouncer) pid="$(cat "$BOUNCER_PIDFILE" 2>/dev/null || true)" ;;
    esac
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 0
    # Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
    sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'
}
CLK_TCK="$(getconf CLK_TCK)"

run_pgbench() { # target seconds args... ; prints "tps latency_ms proxy_cpu_us_per_tx"
    local target=$1 secs=$2 out before after
    shift 2
    before="$(cpu_ticks "$target")"
    out="$("$PGBENCH" -h 127.0.0.1 -p "${PORT[$target]}" -n -T "$secs" "$@" 2>&1)" || {
        echo "$out" >&2
        die "pgbench against $target failed"
    }
    after="$(cpu_ticks "$target")"
    if echo "$out" | grep -Eq '^number of failed transactions: [1-9]'; then
        echo "$out" >&2
        die "pgbench against $target had failed transactions"
    fi
    local tps lat txs cpu=-
    tps="$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)"
    lat="$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' | head -n 1)"
    txs="$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')"
    [ -n "$tps" ] && [ -n "$lat" ] && [ -n "$txs" ] || { echo "$out" >&2; die "cannot parse pgbench output"; }
    if [ -n "$before" ] && [ -n "$after" ] && [ "$txs" -gt 0 ]; then
        cpu="$(awk -v d="$((after - before))" -v hz="$CLK_TCK" -v n="$txs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')"
    fi
    echo "$tps $lat $cpu"
}

log "warm-up"
for t in "${TARGETS[@]}"; do run_pgbench "$t" 2 -S -c 4 -j 2 >/dev/null; done

NT=${#TARGETS[@]}
TOTAL=$((${#SCENARIOS[@]} * REPS * NT))
N=0
log "running ${#SCENARIOS[@]} scenarios x $REPS repetition(s) x $NT targets x ${DURATION} s"
for sc in "${SCENARIOS[@]}"; do
    name="${sc%%|*}"
    # shellcheck disable=SC2206
    args=(${sc#*|})
    for rep in $(seq "$REPS"); do
        # Round-robin, rotating the starting target each repetition.
        for i in $(seq 0 $((NT - 1))); do
            t="${TARGETS[$(((i + rep - 1) % NT))]}"
            N=$((N + 1))
            res="$(run_pgbench "$t" "$DURATION" "${args[@]}")"
            read -r tps lat cpu <<<"$res"
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$t" "$rep" "$tps" "$lat" "$cpu" >>"$RESULTS"
            log "$(printf '[%3d/%d] %-20s %-10s rep %d: %10.1f tps  %8.3f ms  proxy CPU %s µs/tx' \
                "$N" "$TOTAL" "$name" "$t" "$rep" "$tps" "$lat" "$cpu")"
        done
    done
done

# --- 6. report -----------------------------------------------------------------------------
# Medians per (scenario, target): TPS and average latency.
SUMMARY="$TMP/summary.tsv"
sort -t $'\t' -k1,1 -k2,2 "$RESULTS" | awk -F'\t' '
    function median(a, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function flush() {
        if (key == "") return
        printf "%s\t%.1f\t%.4f\t%s\t%d\n", key, median(tp, n), median(la, n),
            (nc ? sprintf("%.1f", median(cp, nc)) : "-"), n
    }
    { k = $1 "\t" $2; if (k != key) { flush(); key = k; n = 0; nc = 0; delete tp; delete la; delete cp }
      n++; tp[n] = $4 + 0; la[n] = $5 + 0; if ($6 != "-") { nc++; cp[nc] = $6 + 0 } }
    END { flush() }' >"$SUMMARY"

declare -A TPS LAT CPU
while IFS=$'\t' read -r sc t tps lat cpu _; do
    TPS["$sc|$t"]="$tps"
    LAT["$sc|$t"]="$lat"
    CPU["$sc|$t"]="$cpu"
done <"$SUMMARY"

added_us() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", (1 / a - 1 / b) * 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

MD="$TMP/table.md"
{
    echo "| scenario | target | TPS (median) | avg latency ms | vs direct | vs pgbouncer | added µs/query vs direct | proxy CPU µs/tx |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
} >"$MD"
printf '\n%-20s %-10s %12s %10s %9s %12s %12s %10s\n' scenario target "TPS(med)" "lat ms" "vs direct" "vs pgbouncer" "+µs/query" "CPU µs/tx"
printf '%s\n' "$(printf '%.0s-' $(seq 102))"
for sc in "${SCENARIOS[@]}"; do
    name="${sc%%|*}"
    for t in "${TARGETS[@]}"; do
        tps="${TPS[$name|$t]}"
        lat="${LAT[$name|$t]}"
        vd="$(ratio "$tps" "${TPS[$name|direct]}")"
        vb="-"
        [ "$HAVE_BOUNCER" = 1 ] && vb="$(ratio "$tps" "${TPS[$name|pgbouncer]}")"
        added="-"
        case "$name" in
            *-c1)
                # One client: one query at a time, so the time per query is 1/TPS (finer
                # than pgbench's latency, which is printed in whole µs).
                if [ "$t" != direct ]; then added="$(added_us "$tps" "${TPS[$name|direct]}")"; fi
                ;;
        esac
        cpu="${CPU[$name|$t]}"
        printf '%-20s %-10s %12.1f %10.3f %9s %12s %12s %10s\n' "$name" "$t" "$tps" "$lat" "$vd" "$vb" "$added" "$cpu"
        printf '| %s | %s | %.0f | %.3f | %s | %s | %s | %s |\n' "$name" "$t" "$tps" "$lat" "$vd" "$vb" "$added" "$cpu" >>"$MD"
    done
done

# The targets from the issue, checked against this run.
verdicts() {
    local ok r name t
    for t in "${TARGETS[@]}"; do
        case "$t" in pgbastion | candidate) ;; *) continue ;; esac
        for name in select-simple-c16 select-simple-c64 select-extended-c16 select-extended-c64; do
            [ -n "${TPS[$name|$t]:-}" ] || continue
            if [ "$HAVE_BOUNCER" = 1 ]; then
                r="$(ratio "${TPS[$name|$t]}" "${TPS[$name|pgbouncer]}")"
                ok="$(awk -v r="$r" 'BEGIN { print (r >= 1.1) ? "met" : "NOT met" }')"
                echo "- $name: $t ${r}× PgBouncer (target ≥ 1.1×): $ok"
            else
                echo "- $name: PgBouncer not installed, not checked"
            fi
        done
        for name in select-simple-c1 select-extended-c1; do
            [ -n "${TPS[$name|$t]:-}" ] || continue
            r="$(added_us "${TPS[$name|$t]}" "${TPS[$name|direct]}")"
            ok="$(awk -v r="$r" 'BEGIN { print (r <= 15) ? "met" : "NOT met" }')"
            echo "- $name: $t adds ${r} µs per query over direct (target ≤ 15 µs): $ok"
        done
        if [ -n "${TPS[churn-c16|$t]:-}" ]; then
            r="$(ratio "${TPS[churn-c16|$t]}" "${TPS[churn-c16|direct]}")"
            ok="$(awk -v r="$r" 'BEGIN { print (r >= 0.9) ? "met" : "NOT met" }')"
            echo "- churn-c16: $t ${r}× direct (target ≥ 0.9×): $ok"
        fi
    done
}

BOUNCER_VERSION="not installed"
[ "$HAVE_BOUNCER" = 1 ] && BOUNCER_VERSION="$("$PGBOUNCER" --version | head -n 1)"
echo
echo "## Results"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); pgbastion: $PGBASTION (tree at start: $TREE)"
echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(uname -sr)"
echo "- $("$PGBIN/postgres" --version); $BOUNCER_VERSION; $("$PGBENCH" --version)"
echo "- $REPS repetition(s) of ${DURATION} s per target and scenario, interleaved; pgbench scale $SCALE"
echo
cat "$MD"
echo
echo "Targets:"
echo
verdicts
