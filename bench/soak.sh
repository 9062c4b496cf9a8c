#!/usr/bin/env bash
# Soak: pgbench through pgbastion for a long time while its configuration is reloaded every
# minute and a churn loop connects beside it; samples pgbastion's RSS, descriptors and
# threads, and says whether any transaction failed and whether anything grew.
#
# Usage (from the repository root):
#   bench/soak.sh                     # 30 minutes, reload every 60 s, samples every 10 s
#   bench/soak.sh --minutes M --reload-every S --sample-every S --clients N
#   bench/soak.sh --no-build --bin PATH --keep
#
# Load, all SCRAM clients, at once for the whole run:
#   - pgbench TPC-B-like -M extended, N clients (default 16) through a transaction pool of 4
#     (a pooled listener);
#   - pgbench -C -S (a new connection per transaction), 2 clients, through the transparent
#     listener: the churn loop;
#   - a reload (SIGHUP) every --reload-every seconds, alternating two valid files that differ
#     in the transaction pool's size (its pool is retired and a new one made under load), an
#     extra route and the listeners' per-IP limit.
# The samples go to $TMP/samples.tsv (kept with --keep); the summary is printed as markdown
# for bench/README.md. Exit status 1 when a transaction failed, a reload was refused, or
# pgbastion died.
set -euo pipefail

MINUTES=30
RELOAD_EVERY=60
SAMPLE_EVERY=10
CLIENTS=16
BUILD=1
KEEP=0
PGBASTION=""

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift ;;
        --reload-every) RELOAD_EVERY="$2"; shift ;;
        --sample-every) SAMPLE_EVERY="$2"; shift ;;
        --clients) CLIENTS="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --bin) PGBASTION="$(realpath "$2")"; BUILD=0; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "bench/soak.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TREE="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || TREE="$TREE, crates/ modified"
source "$ROOT/bench/lib.sh"

if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p pgbastion"
    cargo build --release -p pgbastion
fi
[ -n "$PGBASTION" ] || PGBASTION="${CARGO_TARGET_DIR:-$ROOT/target}/release/pgbastion"
[ -x "$PGBASTION" ] || die "$PGBASTION is missing (run without --no-build)"
find_postgres
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TMP=""
PG_STARTED=0
PIDS=""
cleanup() {
    local status=$?
    set +e
    local pid
    for pid in $PIDS; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [ "$PG_STARTED" = 1 ]; then
        "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$TMP/data" -m fast -w stop >/dev/null 2>&1
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP="$(mktemp -d "${TMPDIR:-/tmp}/pgbastion-soak.XXXXXX")"
chmod 755 "$TMP"
if [ "$(id -u)" = 0 ]; then chown postgres: "$TMP"; fi

PG_PORT="$(free_port)"
PLAIN_PORT="$(free_port)"
TXN_PORT="$(free_port)"
PASSWORD="soak-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
DB=bench
export PGSSLMODE=disable PGGSSENCMODE=disable PGCONNECT_TIMEOUT=10
export PGUSER=bench PGPASSWORD="$PASSWORD"

start_cluster $((CLIENTS + 100))
log "pgbench -i -s 10"
"$PGBENCH" -i -q -s 10 -h 127.0.0.1 -p "$PG_PORT" -d "$DB" >"$TMP/pgbench-init.log" 2>&1 \
    || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

# Two valid configurations; reloads alternate between them.
soak_config() { # variant (0 or 1)
    local size=$((4 + $1)) limit=$((1000 + $1))
    cat <<CONF
pid_file = "pgbastion.pid"

[[listener]]
address = "127.0.0.1:$PLAIN_PORT"
max_connections_per_ip = $limit

[[listener]]
address = "127.0.0.1:$TXN_PORT"
mode = "pooled"
max_connections_per_ip = $limit

[[user]]
name = "bench"
password = "$PASSWORD"

[[route]]
match = { database = "${DB}_txn" }
auth = "scram"
backend = "$BACKEND_URL"
pool = { mode = "transaction", size = $size, checkout_timeout = "60s" }
CONF
    if [ "$1" = 1 ]; then
        cat <<CONF

[[route]]
match = { database = "soak_extra" }
auth = "scram"
backend = "$BACKEND_URL"
CONF
    fi
    cat <<CONF

[[route]]
auth = "scram"
backend = "$BACKEND_URL"

[log]
level = "info"
CONF
}
soak_config 0 >"$TMP/variant0.toml"
soak_config 1 >"$TMP/variant1.toml"
for v in 0 1; do "$PGBASTION" --check-config "$TMP/variant$v.toml" >/dev/null; done
cp "$TMP/variant0.toml" "$TMP/pgbastion.toml"

log "starting pgbastion ($PGBASTION)"
"$PGBASTION" --config "$TMP/pgbastion.toml" 2>"$TMP/pgbastion.log" &
BASTION=$!
PIDS="$BASTION"
wait_port "$TXN_PORT" 30 pgbastion
wait_port "$PLAIN_PORT" 30 pgbastion

SECONDS_TOTAL=$((MINUTES * 60))
log "soak: $MINUTES min, $CLIENTS clients through the transaction pool, churn beside, reload every ${RELOAD_EVERY} s"
"$PGBENCH" -n -T "$SECONDS_TOTAL" -c "$CLIENTS" -j 2 -M extended -P 60 \
    -h 127.0.0.1 -p "$TXN_PORT" -d "${DB}_txn" >"$TMP/pgbench-load.log" 2>&1 &
LOAD=$!
"$PGBENCH" -n -T "$SECONDS_TOTAL" -C -S -c 2 -j 1 -M simple \
    -h 127.0.0.1 -p "$PLAIN_PORT" -d "$DB" >"$TMP/pgbench-churn.log" 2>&1 &
CHURN=$!
PIDS="$LOAD $CHURN $BASTION"

sample() { # elapsed seconds
    local fds threads backends
    fds="$(find "/proc/$BASTION/fd" -mindepth 1 -maxdepth 1 | wc -l)"
    threads="$(awk '/^Threads:/ { print $2 }' "/proc/$BASTION/status")"
    backends="$(su_psql -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench'")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$(rss_kib "$BASTION")" "$fds" "$threads" "$backends" >>"$TMP/samples.tsv"
}
printf 'seconds\trss_kib\tfds\tthreads\tbackends\n' >"$TMP/samples.tsv"
START=$(date +%s)
NEXT_RELOAD=$RELOAD_EVERY
RELOADS=0
VARIANT=0
while kill -0 "$LOAD" 2>/dev/null; do
    sleep "$SAMPLE_EVERY"
    kill -0 "$BASTION" 2>/dev/null || { tail -n 20 "$TMP/pgbastion.log" >&2; die "pgbastion died"; }
    # Samples are taken under load only: one after the load ended would hide growth.
    kill -0 "$LOAD" 2>/dev/null || break
    NOW=$(($(date +%s) - START))
    sample "$NOW"
    if [ "$NOW" -ge "$NEXT_RELOAD" ] && [ "$NOW" -lt $((SECONDS_TOTAL - 5)) ]; then
        VARIANT=$((1 - VARIANT))
        cp "$TMP/variant$VARIANT.toml" "$TMP/pgbastion.toml"
        kill -HUP "$BASTION"
        RELOADS=$((RELOADS + 1))
        NEXT_RELOAD=$((NEXT_RELOAD + RELOAD_EVERY))
    fi
done
LOAD_STATUS=0
wait "$LOAD" || LOAD_STATUS=$?
CHURN_STATUS=0
wait "$CHURN" || CHURN_STATUS=$?
sleep 2
RELOADED="$(grep -c 'configuration reloaded' "$TMP/pgbastion.log" || true)"
REFUSED="$(grep -ci 'ERROR' "$TMP/pgbastion.log" || true)"

field() { sed -n "s/^$2: *\([0-9.]*\).*/\1/p" "$1" | head -n 1; }
failed() { sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$1"; }
aborted() { grep -c 'aborted' "$1" || true; }

# RSS, descriptors and threads: after a 2-minute warm-up, the first and the last sample, and
# the highest.
growth() { # column
    awk -F'\t' -v c="$1" 'NR > 1 && $1 >= 120 { if (!n++) first = $c; last = $c; if ($c > max) max = $c }
        END { printf "%s | %s | %s", first, last, max }' "$TMP/samples.tsv"
}
LOAD_TX="$(field "$TMP/pgbench-load.log" 'number of transactions actually processed')"
CHURN_TX="$(field "$TMP/pgbench-churn.log" 'number of transactions actually processed')"
LOAD_FAILED="$(failed "$TMP/pgbench-load.log")"
CHURN_FAILED="$(failed "$TMP/pgbench-churn.log")"
echo
echo "## Soak: $MINUTES minutes"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); pgbastion: $PGBASTION (tree at start: $TREE)"
echo "- machine: $(nproc) CPUs, $(uname -sr); $("$PGBIN/postgres" --version)"
echo "- load: pgbench TPC-B-like -M extended -c $CLIENTS through a transaction pool of 4/5:" \
    "${LOAD_TX:-?} transactions, ${LOAD_FAILED:-?} failed, $(aborted "$TMP/pgbench-load.log") aborted client(s), exit $LOAD_STATUS"
echo "- churn: pgbench -C -S -c 2 through the transparent listener (a SCRAM login per transaction):" \
    "${CHURN_TX:-?} transactions, ${CHURN_FAILED:-?} failed, $(aborted "$TMP/pgbench-churn.log") aborted client(s), exit $CHURN_STATUS"
echo "- reloads: $RELOADS sent, $RELOADED logged as done, $REFUSED ERROR line(s) in pgbastion's log"
echo
echo "| after the 2-minute warm-up | first | last | highest |"
echo "|---|---:|---:|---:|"
echo "| pgbastion VmRSS (KiB) | $(growth 2) |"
echo "| open descriptors | $(growth 3) |"
echo "| threads | $(growth 4) |"
echo "| backends of bench | $(growth 5) |"
if [ "$LOAD_STATUS" != 0 ] || [ "$CHURN_STATUS" != 0 ] || [ "${LOAD_FAILED:-1}" != 0 ] \
    || [ "${CHURN_FAILED:-1}" != 0 ] || [ "$RELOADED" != "$RELOADS" ]; then
    echo
    echo "**failed**: see $TMP (run with --keep to keep it)"
    exit 1
fi
