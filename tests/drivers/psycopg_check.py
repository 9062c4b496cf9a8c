"""What a psycopg 3 application sees, as JSON on stdout: run once against PostgreSQL and once
through pgbastion; the two outputs must be equal (crates/pgbastion/tests/drivers.rs).

Connection settings come from PGB_HOST, PGB_PORT, PGB_USER, PGB_PASSWORD, PGB_DB and PGB_CA."""

import json
import os
import sys
import threading
import time

import psycopg
from psycopg import errors


def conninfo(tls=False):
    info = dict(
        host=os.environ["PGB_HOST"],
        port=os.environ["PGB_PORT"],
        user=os.environ["PGB_USER"],
        password=os.environ["PGB_PASSWORD"],
        dbname=os.environ["PGB_DB"],
        connect_timeout=10,
    )
    if tls:
        # verify-ca: the certificate names localhost, we dial an IP.
        info.update(sslmode="verify-ca", sslrootcert=os.environ["PGB_CA"])
    else:
        info.update(sslmode="disable")
    return info


def connect(tls=False, **kwargs):
    return psycopg.connect(**conninfo(tls), **kwargs)


def plain():
    with connect() as conn:
        return conn.execute("SELECT 1").fetchone()[0]


def tls():
    with connect(tls=True) as conn:
        return [conn.execute("SELECT 'over tls'").fetchone()[0], conn.pgconn.ssl_in_use]


def error_then_query():
    with connect(autocommit=True) as conn:
        try:
            conn.execute("SELECT 1/0")
            code = None
        except psycopg.Error as error:
            code = error.sqlstate
        return [code, conn.execute("SELECT 2").fetchone()[0]]


def cancel_then_statement():
    """cancel_safe() waits until the server has closed the cancel connection; the next
    statement must run untouched, whether the cancelled one was running or had ended."""
    outcomes = []
    with connect(autocommit=True) as conn:
        for _ in range(3):
            threading.Timer(0.3, conn.cancel_safe).start()
            try:
                conn.execute("SELECT pg_sleep(5)")
                outcomes.append("finished")
            except errors.QueryCanceled as error:
                outcomes.append(error.sqlstate)
            conn.cancel_safe()  # idle: cancels nothing, now or later
            outcomes.append(conn.execute("SELECT 'next', pg_sleep(0.2)").fetchone()[0])
    return outcomes


def disconnect():
    conn = connect()
    conn.execute("SELECT 1")
    conn.close()
    return conn.closed


def prepared():
    with connect(autocommit=True) as conn:
        # psycopg prepares a query on the server after it ran 5 times (prepare_threshold).
        results = [conn.execute("SELECT %s::int + 1", [n]).fetchone()[0] for n in range(8)]
        results.append(conn.execute("SELECT %s::int * 2", [21], prepare=True).fetchone()[0])
        conn.execute("DEALLOCATE ALL")
        results.append(conn.execute("SELECT %s::int + 1", [99]).fetchone()[0])
        return results


def notify_from_own_session():
    with connect(autocommit=True) as conn:
        conn.execute("LISTEN pgb_channel")
        conn.execute("NOTIFY pgb_channel, 'hello'")
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for notify in conn.notifies(timeout=5, stop_after=1):
            return {
                "channel": notify.channel,
                "payload": notify.payload,
                "sender_is_own_backend": notify.pid == backend_pid,
                "backend_pid_is_known": conn.info.backend_pid == backend_pid,
            }
        return "no notification"


def copy():
    with connect(autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE pgb_copy (id int, name text)")
        with conn.cursor() as cur:
            with cur.copy("COPY pgb_copy (id, name) FROM STDIN") as copy_in:
                for i in range(100):
                    copy_in.write_row((i, f"row {i}"))
            with cur.copy("COPY (SELECT * FROM pgb_copy ORDER BY id) TO STDOUT") as copy_out:
                rows = list(copy_out.rows())
        return [conn.execute("SELECT count(*) FROM pgb_copy").fetchone()[0], len(rows)]


def main():
    results = {}
    for check in (
        plain,
        tls,
        error_then_query,
        cancel_then_statement,
        disconnect,
        prepared,
        notify_from_own_session,
        copy,
    ):
        started = time.monotonic()
        try:
            results[check.__name__] = check()
        except Exception as error:  # the difference is what the test reports
            results[check.__name__] = f"raised {type(error).__name__}: {error}"
        if time.monotonic() - started > 30:
            results[check.__name__] = "took over 30 s"
    json.dump(results, sys.stdout, indent=1, sort_keys=True)


main()
