// node-postgres (`pg`) through a transaction pool: 20 clients (promises on one event loop,
// each with its own connection) share the pool of 2 backends that
// crates/pgbastion/tests/drivers_pooled.rs puts behind the port, and must see what they see
// straight at PostgreSQL. The report (JSON on stdout) holds only counts, booleans, SQLSTATEs
// and values fixed by the script, so both runs print the same.
//
// What is checked, and why it is hard for a pool (docs/pooling.md, /work/shared/POOLING.md):
// - named_queries: every client names its query 'q1' but gives it a text of its own, and
//   all share 'shared'; unnamed parametrised queries in between. Values are the client's own,
//   so a statement or a row that leaks across clients counts as a mismatch (POOLING.md 3, 4).
// - many_statements: one client names 320 queries (more than a backend's cache of 256) and
//   runs the first ones again: evicted statements come back unseen.
// - discard: A and B use the same named query; B sends DISCARD ALL, then DEALLOCATE ALL:
//   A goes on, B gets PostgreSQL's 26000 for the statement it dropped (POOLING.md 6).
// - session_parameters: clients with options '-c TimeZone=…' and their own
//   application_name alternate 50 transactions, SET TIME ZONE and RESET ALL (POOLING.md 8).
// - listen: A LISTENs (which pins it), B runs queries, C NOTIFYs 20 times: A gets the 20, in
//   order, B none (POOLING.md 9).
//
// Settings: PGB_HOST, PGB_PORT, PGB_USER, PGB_PASSWORD, PGB_DB (no TLS).
'use strict'

const { Client } = require('pg')

const CLIENTS = 20

async function connect (extra = {}) {
  const client = new Client({
    host: process.env.PGB_HOST,
    port: Number(process.env.PGB_PORT),
    user: process.env.PGB_USER,
    password: process.env.PGB_PASSWORD,
    database: process.env.PGB_DB,
    ssl: false,
    connectionTimeoutMillis: 30000,
    ...extra
  })
  // An 'error' event without a handler would crash the script instead of reporting.
  client.on('error', () => {})
  await client.connect()
  return client
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Connects `count` clients, client k with connect(options(k)), runs work(k, client) for all
// of them at once and ends them; their results.
async function eachClient (count, work, options = () => ({})) {
  return Promise.all(Array.from({ length: count }, async (_, k) => {
    const client = await connect(options(k))
    try {
      return await work(k, client)
    } finally {
      await client.end()
    }
  }))
}

async function value (client, query, values) {
  const { rows } = await client.query(query, values)
  return rows[0].v
}

// What `promise` resolves to, or the SQLSTATE it fails with.
const codeOr = (promise) => promise.catch((error) => error.code)

const sum = (numbers) => numbers.reduce((a, b) => a + b, 0)

const checks = {
  async named_queries () {
    const mismatches = await eachClient(CLIENTS, async (k, client) => {
      let wrong = 0
      for (let r = 0; r < 50; r++) {
        const own = { name: 'q1', text: `SELECT $1::int * $2::int + ${1000 * k} AS v`, values: [k, r] }
        wrong += (await value(client, own)) !== k * r + 1000 * k
        const shared = { name: 'shared', text: 'SELECT $1::int - $2::int AS v', values: [r, k] }
        wrong += (await value(client, shared)) !== r - k
        wrong += (await value(client, "SELECT $1::text || '/' || $2::text AS v", [k, r])) !== `${k}/${r}`
      }
      return wrong
    })
    return { executions: CLIENTS * 150, mismatches: sum(mismatches) }
  },

  async many_statements () {
    const client = await connect()
    try {
      const query = (i, n) => ({ name: `many_${i}`, text: `SELECT $1::int + ${i} AS v`, values: [n] })
      let wrong = 0
      for (let i = 0; i < 320; i++) wrong += (await value(client, query(i, 7))) !== 7 + i
      let rerun = 0
      for (let i = 0; i < 50; i++) rerun += (await value(client, query(i, 8))) !== 8 + i
      return { prepared: 320, mismatches: wrong, rerun_mismatches: rerun }
    } finally {
      await client.end()
    }
  },

  async discard () {
    const [a, b] = [await connect(), await connect()]
    const named = (n) => ({ name: 'shared_ab', text: 'SELECT $1::int * 3 AS v', values: [n] })
    try {
      const steps = { a_before: await value(a, named(1)), b_before: await value(b, named(2)) }
      await b.query('DISCARD ALL')
      steps.a_after_b_discard = [await value(a, named(3)), await value(a, named(4))]
      // pg still believes B's statement exists and sends Bind only.
      steps.b_after_own_discard = await codeOr(value(b, named(5)))
      await b.query('DEALLOCATE ALL')
      steps.a_after_b_deallocate = await value(a, named(6))
      steps.b_unnamed = await value(b, 'SELECT $1::int * 3 AS v', [7])
      return steps
    } finally {
      await a.end()
      await b.end()
    }
  },

  async session_parameters () {
    const zones = ['Africa/Nairobi', 'America/Denver']
    const startup = (k) => [zones[k % 2], `pool_pg_${k}`]
    const outcomes = await eachClient(CLIENTS, async (k, client) => {
      let wanted = startup(k)
      let wrong = 0
      const seen = []
      for (let t = 0; t < 50; t++) {
        if (t === 20) {
          await client.query("SET TIME ZONE 'UTC'")
          await client.query(`SET application_name TO 'renamed_${k}'`)
          wanted = ['UTC', `renamed_${k}`]
        }
        if (t === 35) {
          await client.query('RESET ALL')
          wanted = startup(k)
        }
        await client.query('BEGIN')
        const { rows } = await client.query(
          "SELECT current_setting('TimeZone') AS zone, current_setting('application_name') AS app"
        )
        await client.query('COMMIT')
        wrong += rows[0].zone !== wanted[0] || rows[0].app !== wanted[1]
        if (seen[seen.length - 1] !== rows[0].zone) seen.push(rows[0].zone)
      }
      return { wrong, seen }
    }, (k) => ({ options: `-c TimeZone=${startup(k)[0]}`, application_name: startup(k)[1] }))
    return {
      transactions: CLIENTS * 50,
      mismatches: sum(outcomes.map((o) => o.wrong)),
      zones_seen_by_client_0: outcomes[0].seen,
      zones_seen_by_client_1: outcomes[1].seen
    }
  },

  async listen () {
    const [a, b, c] = [await connect(), await connect(), await connect()]
    const got = { a: [], b: [] }
    a.on('notification', (n) => got.a.push(n.payload))
    b.on('notification', (n) => got.b.push(n.payload))
    try {
      await a.query('LISTEN pool_pg_channel')
      let bWrong = 0
      for (let i = 0; i < 20; i++) {
        bWrong += (await value(b, 'SELECT $1::int AS v', [i])) !== i
        await c.query(`NOTIFY pool_pg_channel, '${i}'`)
        bWrong += (await value(b, 'SELECT $1::int AS v', [-i])) !== -i
      }
      for (let waited = 0; got.a.length < 20 && waited < 5000; waited += 50) await sleep(50)
      await sleep(200) // room for a stray one to B, or a 21st to A
      return {
        a_received: got.a.length,
        a_in_order: got.a.every((payload, i) => payload === String(i)),
        a_still_answers: await value(a, 'SELECT 42 AS v'),
        b_received: got.b.length,
        b_mismatches: bWrong
      }
    } finally {
      await Promise.all([a.end(), b.end(), c.end()])
    }
  }
}

async function main () {
  const results = {}
  for (const [name, check] of Object.entries(checks)) {
    try {
      results[name] = await Promise.race([check(), sleep(120000).then(() => 'took over 120 s')])
    } catch (error) {
      results[name] = `raised ${error.name}: ${error.message}`
    }
  }
  // Sorted keys, as the Python scripts print them.
  const sorted = Object.fromEntries(Object.keys(results).sort().map((k) => [k, results[k]]))
  process.stdout.write(JSON.stringify(sorted, null, 1))
  process.exit(0)
}

main()
