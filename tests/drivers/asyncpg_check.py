"""What an asyncpg application sees, as JSON on stdout: run once against PostgreSQL and once
through pgbastion; the two outputs must be equal (crates/pgbastion/tests/drivers.rs).

Connection settings come from PGB_HOST, PGB_PORT, PGB_USER, PGB_PASSWORD, PGB_DB and PGB_CA
(the CA of the server certificate, for the TLS check)."""

import asyncio
import json
import os
import ssl
import sys

import asyncpg


def settings(tls=False):
    kwargs = dict(
        host=os.environ["PGB_HOST"],
        port=int(os.environ["PGB_PORT"]),
        user=os.environ["PGB_USER"],
        password=os.environ["PGB_PASSWORD"],
        database=os.environ["PGB_DB"],
        timeout=10,
    )
    if tls:
        context = ssl.create_default_context(cafile=os.environ["PGB_CA"])
        context.check_hostname = False  # the certificate names localhost; we dial an IP
        kwargs["ssl"] = context
    else:
        kwargs["ssl"] = False
    return kwargs


async def connect(tls=False):
    return await asyncpg.connect(**settings(tls))


async def plain():
    conn = await connect()
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def tls():
    conn = await connect(tls=True)
    try:
        return await conn.fetchval("SELECT 'over tls'")
    finally:
        await conn.close()


async def error_then_query():
    conn = await connect()
    try:
        try:
            await conn.fetchval("SELECT 1/0")
            code = None
        except asyncpg.PostgresError as error:
            code = error.sqlstate
        return [code, await conn.fetchval("SELECT 2")]
    finally:
        await conn.close()


async def cancel_then_statement():
    """asyncpg cancels a statement that outlives its timeout, waits for the cancel
    connection to close, and goes on: the next statement must not be hit."""
    conn = await connect()
    outcomes = []
    try:
        for _ in range(3):
            try:
                await conn.execute("SELECT pg_sleep(5)", timeout=0.3)
                outcomes.append("finished")
            except asyncio.TimeoutError:
                outcomes.append("timeout")
            outcomes.append(await conn.fetchval("SELECT 'next', pg_sleep(0.2)"))
        return outcomes
    finally:
        await conn.close()


async def disconnect():
    conn = await connect()
    await conn.fetchval("SELECT 1")
    await conn.close()
    return conn.is_closed()


async def prepared():
    conn = await connect()
    try:
        statement = await conn.prepare("SELECT $1::int + 1")
        results = [await statement.fetchval(n) for n in range(3)]
        results.append(await conn.fetchval("SELECT $1::text || 'x'", "a"))
        return results
    finally:
        await conn.close()


async def notify_from_own_session():
    conn = await connect()
    try:
        received = asyncio.get_running_loop().create_future()

        def on_notify(_conn, pid, channel, payload):
            if not received.done():
                received.set_result((pid, channel, payload))

        await conn.add_listener("pgb_channel", on_notify)
        await conn.execute("NOTIFY pgb_channel, 'hello'")
        pid, channel, payload = await asyncio.wait_for(received, 5)
        backend_pid = await conn.fetchval("SELECT pg_backend_pid()")
        return {
            "channel": channel,
            "payload": payload,
            "sender_is_own_backend": pid == backend_pid,
            "server_pid_is_backend_pid": conn.get_server_pid() == backend_pid,
        }
    finally:
        await conn.close()


async def copy():
    conn = await connect()
    try:
        await conn.execute("CREATE TEMP TABLE pgb_copy (id int, name text)")
        await conn.copy_records_to_table(
            "pgb_copy", records=[(i, f"row {i}") for i in range(100)]
        )
        rows = []

        async def sink(chunk):
            rows.append(bytes(chunk))

        await conn.copy_from_query("SELECT * FROM pgb_copy ORDER BY id", output=sink)
        text = b"".join(rows).decode()
        return [await conn.fetchval("SELECT count(*) FROM pgb_copy"), text.count("\n")]
    finally:
        await conn.close()


async def main():
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
        try:
            results[check.__name__] = await asyncio.wait_for(check(), 30)
        except Exception as error:  # the difference is what the test reports
            results[check.__name__] = f"raised {type(error).__name__}: {error}"
    json.dump(results, sys.stdout, indent=1, sort_keys=True)


asyncio.run(main())
