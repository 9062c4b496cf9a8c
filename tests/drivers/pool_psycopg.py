"""psycopg 3 through a transaction pool: 20 threads, each with its own connection, share what
crates/pgbastion/tests/drivers_pooled.rs gives them (a pool of 2 backends) and must see what
they see straight at PostgreSQL. The report (JSON on stdout) holds only counts, booleans,
SQLSTATEs and values fixed by the script, so the two runs must print the same thing.

What is checked, and why it is hard for a pool (docs/pooling.md, /work/shared/POOLING.md):
- auto_prepare: psycopg names its statements _pg3_0, _pg3_1… on every connection after 5
  executions (prepare_threshold), so 20 clients reuse the same names for different texts;
  prepare=True as well. A result that is not the client's own counts as a mismatch.
- unnamed_statement: libpq-level Parse("") once, then Bind("") 200 times per thread, each
  thread with its own SQL: the unnamed statement must follow the client (POOLING.md 3).
- many_statements: one client prepares 320 statements (more than a backend's cache of 256)
  then runs the first ones again: evicted statements are prepared again unseen.
- deallocate: a client prepares s1, DEALLOCATEs it and prepares s1 again while another
  client keeps its own s1; PostgreSQL's 42P05 / 26000 / 25001 for the client's own names
  (POOLING.md 6).
- evicted: psycopg drops the statements its own cache evicts (prepared_max): with a Close
  message over libpq 17 and later (the wheel's), with DEALLOCATE _pg3_N through the extended
  protocol over older ones (that path is tested in crates/proxy/tests/pooling.rs).
- pipeline_error: an error in the middle of a pipeline (POOLING.md 1): the SQLSTATE, which
  inserts survived, and the connection works afterwards.
- session_parameters: clients with different options='-c TimeZone=…' and application_name
  alternate 50 transactions each, SET their own values and RESET ALL (POOLING.md 8).
- copy: 5 threads COPY 20,000 rows each into one table, one hits a unique violation; counts
  are right and a new client is served (POOLING.md 10).

Settings: PGB_HOST, PGB_PORT, PGB_USER, PGB_PASSWORD, PGB_DB (no TLS)."""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import pq

CLIENTS = 20


def connect(**kwargs):
    return psycopg.connect(
        host=os.environ["PGB_HOST"],
        port=os.environ["PGB_PORT"],
        user=os.environ["PGB_USER"],
        password=os.environ["PGB_PASSWORD"],
        dbname=os.environ["PGB_DB"],
        sslmode="disable",
        connect_timeout=10,
        autocommit=True,  # each statement its own transaction, unless in conn.transaction()
        **kwargs,
    )


def in_threads(count, work):
    """Runs work(0) … work(count - 1) at the same time, one thread each; their results."""
    with ThreadPoolExecutor(count) as executor:
        return list(executor.map(work, range(count)))


def one(conn, sql, params=None, **kwargs):
    return conn.execute(sql, params, **kwargs).fetchone()[0]


def sqlstate(result):
    """The SQLSTATE of a libpq result, or None when it succeeded."""
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return None
    return result.error_field(pq.DiagnosticField.SQLSTATE).decode()


def auto_prepare():
    def client(k):
        wrong = runs = 0
        with connect() as conn:
            for r in range(12):
                # The same text in every client, then a text of the client's own.
                wrong += one(conn, "SELECT %s::int * %s::int", [k, r]) != k * r
                wrong += one(conn, f"SELECT %s::int + {1000 * k}", [r]) != 1000 * k + r
                runs += 2
            for r in range(3):
                got = one(conn, f"SELECT %s::text || ' of client {k}'", [r], prepare=True)
                wrong += got != f"{r} of client {k}"
                runs += 1
        return runs, wrong

    outcomes = in_threads(CLIENTS, client)
    return {
        "executions": sum(runs for runs, _ in outcomes),
        "mismatches": sum(wrong for _, wrong in outcomes),
    }


def unnamed_statement():
    def client(k):
        wrong = errors = 0
        with connect() as conn:
            pgconn = conn.pgconn
            sql = f"SELECT {k}::int AS client, $1::int * 2 AS doubled".encode()
            errors += sqlstate(pgconn.prepare(b"", sql)) is not None
            for r in range(200):
                result = pgconn.exec_prepared(b"", [str(r).encode()])
                if sqlstate(result) is not None:
                    errors += 1
                    continue
                row = (result.get_value(0, 0), result.get_value(0, 1))
                wrong += row != (str(k).encode(), str(2 * r).encode())
        return wrong, errors

    outcomes = in_threads(CLIENTS, client)
    return {
        "executions": CLIENTS * 200,
        "mismatches": sum(wrong for wrong, _ in outcomes),
        "errors": sum(errors for _, errors in outcomes),
    }


def many_statements():
    with connect() as conn:
        conn.prepared_max = None  # psycopg itself must not evict: the pool has to
        queries = [f"SELECT %s::int + {i} AS v{i}" for i in range(320)]
        wrong = sum(one(conn, q, [7], prepare=True) != 7 + i for i, q in enumerate(queries))
        rerun = sum(one(conn, q, [8], prepare=True) != 8 + i for i, q in enumerate(queries[:50]))
        return {"prepared": len(queries), "mismatches": wrong, "rerun_mismatches": rerun}


def evicted():
    def client(k):
        with connect() as conn:
            conn.prepare_threshold = 0
            conn.prepared_max = 2
            return [
                one(conn, f"SELECT %s::int + {i} + {1000 * k}", [r]) == r + i + 1000 * k
                for r in range(2)
                for i in range(6)
            ]

    outcomes = in_threads(4, client)
    return {"right": sum(map(sum, outcomes)), "runs": sum(map(len, outcomes))}


def deallocate():
    with connect() as a, connect() as b:
        pa, pb = a.pgconn, b.pgconn

        def run(pgconn, value):
            result = pgconn.exec_prepared(b"s1", [str(value).encode()])
            return sqlstate(result) or int(result.get_value(0, 0))

        steps = {}
        pb.prepare(b"s1", b"SELECT $1::int + 300")
        pa.prepare(b"s1", b"SELECT $1::int + 100")
        steps["a_first"] = run(pa, 5)
        steps["a_prepare_again"] = sqlstate(pa.prepare(b"s1", b"SELECT $1::int + 100"))
        a.execute("DEALLOCATE s1")
        steps["b_after_a_deallocate"] = run(pb, 5)
        steps["a_after_deallocate"] = run(pa, 5)
        steps["a_reprepare"] = sqlstate(pa.prepare(b"s1", b"SELECT $1::int + 200"))
        steps["a_second"] = run(pa, 5)
        try:
            a.execute("DEALLOCATE s2")
            steps["a_deallocate_unknown"] = None
        except psycopg.Error as error:
            steps["a_deallocate_unknown"] = error.sqlstate
        try:
            with a.transaction():
                a.execute("DISCARD ALL")
            steps["a_discard_in_transaction"] = None
        except psycopg.Error as error:
            steps["a_discard_in_transaction"] = error.sqlstate
        a.execute("DISCARD ALL")
        steps["a_after_discard"] = run(pa, 5)
        steps["b_after_a_discard"] = run(pb, 6)
        return steps


def pipeline_error():
    def client(k):
        insert = "INSERT INTO pool_psycopg_pipeline (client, n) VALUES (%s, %s)"
        code = None
        with connect() as conn:
            try:
                with conn.pipeline() as pipeline:
                    conn.execute(insert, [k, 1])
                    pipeline.sync()
                    # One implicit transaction up to the next Sync: the error undoes
                    # insert 2 and skips insert 3. psycopg raises when it reads the error,
                    # at the execute after it or at the Sync: either way the block ends.
                    conn.execute(insert, [k, 2])
                    conn.execute("SELECT 1/0")
                    conn.execute(insert, [k, 3])
                    pipeline.sync()
            except psycopg.Error as error:
                code = error.sqlstate
            with conn.pipeline():
                conn.execute(insert, [k, 4])
            conn.execute(insert, [k, 5])
            kept = conn.execute(
                "SELECT n FROM pool_psycopg_pipeline WHERE client = %s ORDER BY n", [k]
            ).fetchall()
            return [code, [n for (n,) in kept], one(conn, "SELECT 'still works'")]

    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS pool_psycopg_pipeline")
        conn.execute("CREATE TABLE pool_psycopg_pipeline (client int, n int)")
    outcomes = in_threads(5, client)
    # Every client did the same thing: one distinct outcome is expected.
    return [json.loads(o) for o in sorted({json.dumps(o) for o in outcomes})]


def session_parameters():
    zones = ["Asia/Tokyo", "America/Lima"]

    def client(k):
        startup = (zones[k % 2], f"pool_psycopg_{k}")
        wanted = startup
        seen = []
        wrong = 0
        with connect(options=f"-c TimeZone={startup[0]}", application_name=startup[1]) as conn:
            for t in range(50):
                if t == 20:
                    conn.execute("SET TimeZone = 'UTC'")
                    conn.execute(f"SET application_name = 'renamed_{k}'")
                    wanted = ("UTC", f"renamed_{k}")
                if t == 35:
                    conn.execute("RESET ALL")
                    wanted = startup
                with conn.transaction():
                    got = conn.execute(
                        "SELECT current_setting('TimeZone'), current_setting('application_name')"
                    ).fetchone()
                wrong += got != wanted
                if not seen or seen[-1] != got[0]:
                    seen.append(got[0])
        return wrong, seen

    outcomes = in_threads(CLIENTS, client)
    return {
        "transactions": CLIENTS * 50,
        "mismatches": sum(wrong for wrong, _ in outcomes),
        "zones_seen_by_client_0": outcomes[0][1],
        "zones_seen_by_client_1": outcomes[1][1],
    }


def copy():
    rows = 20_000

    def writer(w):
        ids = [w * rows + i for i in range(rows)]
        if w == 3:
            ids[rows // 2] = ids[0]  # a duplicate key half way: 23505
        outcome = "ok"
        with connect() as conn:
            try:
                with conn.cursor().copy(
                    "COPY pool_psycopg_copy (id, writer) FROM STDIN"
                ) as copy_in:
                    for row_id in ids:
                        copy_in.write_row((row_id, w))
            except psycopg.Error as error:
                outcome = error.sqlstate
            count = one(conn, "SELECT count(*) FROM pool_psycopg_copy WHERE writer = %s", [w])
        return [w, outcome, count]

    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS pool_psycopg_copy")
        conn.execute("CREATE TABLE pool_psycopg_copy (id int PRIMARY KEY, writer int)")
    writers = in_threads(5, writer)
    with connect() as fresh:
        total = one(fresh, "SELECT count(*) FROM pool_psycopg_copy")
    return {"writers": writers, "total_seen_by_a_new_client": total}


def main():
    results = {}
    for check in (
        auto_prepare,
        unnamed_statement,
        many_statements,
        evicted,
        deallocate,
        pipeline_error,
        session_parameters,
        copy,
    ):
        try:
            results[check.__name__] = check()
        except Exception as error:  # the difference is what the test reports
            results[check.__name__] = f"raised {type(error).__name__}: {error}"
    json.dump(results, sys.stdout, indent=1, sort_keys=True)


main()
