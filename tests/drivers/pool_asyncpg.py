"""asyncpg through a transaction pool: 20 asyncio tasks, each with its own connection, share
the pool of 2 backends that crates/pgbastion/tests/drivers_pooled.rs puts behind the port,
and must see what they see straight at PostgreSQL. The report (JSON on stdout) holds only
counts, booleans, SQLSTATEs and values fixed by the script, so both runs print the same.

What is checked, and why it is hard for a pool (docs/pooling.md, /work/shared/POOLING.md):
- statement_cache: asyncpg prepares every query under a name of its own
  (__asyncpg_stmt_1__, …) that every connection reuses for different texts; explicit
  conn.prepare() too. Each task's values are its own, so leakage shows as a mismatch.
- many_statements: one connection holds 320 prepared statements (more than a backend's
  cache of 256) and runs the first ones again: evicted statements come back unseen.
- deallocate: B runs DEALLOCATE ALL while A keeps using the same statement (POOLING.md 6).
- session_parameters: tasks with their own TimeZone and application_name (startup
  parameters) alternate 50 transactions, change them with set_config and RESET ALL
  (POOLING.md 8).
- cancel: a statement outliving asyncio.wait_for is cancelled, and the next statement is
  never hit by that cancel; bystanders never see 57014 (POOLING.md 11).

Settings: PGB_HOST, PGB_PORT, PGB_USER, PGB_PASSWORD, PGB_DB (no TLS)."""

import asyncio
import json
import os
import sys

import asyncpg

CLIENTS = 20


async def connect(**kwargs):
    return await asyncpg.connect(
        host=os.environ["PGB_HOST"],
        port=int(os.environ["PGB_PORT"]),
        user=os.environ["PGB_USER"],
        password=os.environ["PGB_PASSWORD"],
        database=os.environ["PGB_DB"],
        ssl=False,
        timeout=30,
        **kwargs,
    )


async def each_client(count, work, settings=lambda k: {}):
    """Connects `count` clients (client k with connect(**settings(k))) and runs work(k, conn)
    for all of them at once; their results."""

    async def one(k):
        conn = await connect(**settings(k))
        try:
            return await work(k, conn)
        finally:
            await conn.close()

    return await asyncio.gather(*(one(k) for k in range(count)))


async def sqlstate_or(query):
    """What `query` returns, or the SQLSTATE it fails with."""
    try:
        return await query
    except asyncpg.PostgresError as error:
        return error.sqlstate


async def statement_cache():
    async def work(k, conn):
        wrong = 0
        explicit = await conn.prepare(f"SELECT $1::text || ' of client {k}'")
        for r in range(50):
            wrong += await conn.fetchval("SELECT $1::int * $2::int", k, r) != k * r
            wrong += await conn.fetchval(f"SELECT $1::int + {1000 * k}", r) != 1000 * k + r
            if r % 5 == 0:
                wrong += await explicit.fetchval(str(r)) != f"{r} of client {k}"
        return wrong

    mismatches = await each_client(CLIENTS, work)
    return {"executions": CLIENTS * 110, "mismatches": sum(mismatches)}


async def many_statements():
    conn = await connect()
    try:
        statements = [await conn.prepare(f"SELECT $1::int + {i}") for i in range(320)]
        wrong = 0
        for i, statement in enumerate(statements):
            wrong += await statement.fetchval(7) != 7 + i
        rerun = 0
        for i, statement in enumerate(statements[:50]):
            rerun += await statement.fetchval(8) != 8 + i
        return {"prepared": len(statements), "mismatches": wrong, "rerun_mismatches": rerun}
    finally:
        await conn.close()


async def deallocate():
    a, b = await connect(), await connect()
    query = "SELECT $1::int + 7"
    try:
        steps = {"a_before": await a.fetchval(query, 1), "b_before": await b.fetchval(query, 2)}
        await b.execute("DEALLOCATE ALL")
        steps["a_after_b_deallocate"] = [await a.fetchval(query, n) for n in range(3)]
        # B's cache still names the statement it deallocated: PostgreSQL's 26000, each time.
        steps["b_after_own_deallocate"] = [await sqlstate_or(b.fetchval(query, n)) for n in (3, 4)]
        steps["b_other_statement"] = await b.fetchval("SELECT $1::int - 7", 10)
        steps["a_still"] = await a.fetchval(query, 5)
        return steps
    finally:
        await a.close()
        await b.close()


async def session_parameters():
    zones = ["Europe/Paris", "Pacific/Auckland"]

    def startup(k):
        return (zones[k % 2], f"pool_asyncpg_{k}")

    async def work(k, conn):
        wanted = startup(k)
        wrong = 0
        seen = []
        for t in range(50):
            if t == 20:
                await conn.fetchval(
                    "SELECT set_config('TimeZone', 'UTC', false),"
                    " set_config('application_name', $1, false)",
                    f"renamed_{k}",
                )
                wanted = ("UTC", f"renamed_{k}")
            if t == 35:
                await conn.execute("RESET ALL")
                wanted = startup(k)
            async with conn.transaction():
                got = tuple(
                    await conn.fetchrow(
                        "SELECT current_setting('TimeZone'), current_setting('application_name')"
                    )
                )
            wrong += got != wanted
            if not seen or seen[-1] != got[0]:
                seen.append(got[0])
        return wrong, seen

    def settings(k):
        zone, name = startup(k)
        return {"server_settings": {"TimeZone": zone, "application_name": name}}

    outcomes = await each_client(CLIENTS, work, settings)
    return {
        "transactions": CLIENTS * 50,
        "mismatches": sum(wrong for wrong, _ in outcomes),
        "zones_seen_by_client_0": outcomes[0][1],
        "zones_seen_by_client_1": outcomes[1][1],
    }


async def timeout_then(conn, value, timeout):
    """Runs pg_sleep(10) under wait_for(timeout), then a short statement that a late cancel
    would hit; returns (how the sleep ended, what the next statement gave)."""
    try:
        await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(10)"), timeout=timeout)
        ended = "finished"
    except asyncio.TimeoutError:
        ended = "timeout"
    return ended, await sqlstate_or(conn.fetchval("SELECT $1::int FROM pg_sleep(0.05)", value))


async def cancel():
    # A's sleep is cancelled; then B and A each run a statement at once.
    a, b = await connect(), await connect()
    try:
        first = await timeout_then(a, 1, 0.5)
        alone = [*first, await b.fetchval("SELECT 2"), await a.fetchval("SELECT 1")]
    finally:
        await a.close()
        await b.close()

    # 50 rounds of timeout-then-statement over 5 clients, while 5 bystanders run short
    # statements that a misdirected cancel would hit.
    async def sleeper(k, conn):
        outcomes = [await timeout_then(conn, 100 * k + r, 0.5) for r in range(10)]
        return [
            sum(ended == "timeout" for ended, _ in outcomes),
            sum(after == 100 * k + r for r, (_, after) in enumerate(outcomes)),
        ]

    async def bystander(k, conn):
        hit = wrong = 0
        for r in range(40):
            try:
                wrong += await conn.fetchval("SELECT $1::int FROM pg_sleep(0.02)", r) != r
            except asyncpg.QueryCanceledError:
                hit += 1
        return [hit, wrong]

    sleepers, bystanders = await asyncio.gather(
        each_client(5, sleeper), each_client(5, bystander)
    )
    return {
        "alone": alone,
        "rounds": 50,
        "timeouts": sum(t for t, _ in sleepers),
        "next_statement_right": sum(n for _, n in sleepers),
        "bystander_statements": 5 * 40,
        "bystanders_cancelled": sum(h for h, _ in bystanders),
        "bystanders_wrong": sum(w for _, w in bystanders),
    }


async def main():
    results = {}
    for check in (statement_cache, many_statements, deallocate, session_parameters, cancel):
        try:
            results[check.__name__] = await asyncio.wait_for(check(), 120)
        except Exception as error:  # the difference is what the test reports
            results[check.__name__] = f"raised {type(error).__name__}: {error}"
    json.dump(results, sys.stdout, indent=1, sort_keys=True)


asyncio.run(main())
