// What a node-postgres (`pg`) application sees, as JSON on stdout: run once against
// PostgreSQL and once through pgbastion; the two outputs must be equal
// (crates/pgbastion/tests/drivers.rs). Settings: PGB_HOST, PGB_PORT, PGB_USER, PGB_PASSWORD,
// PGB_DB, PGB_CA.
'use strict'

const fs = require('fs')
const { Client } = require('pg')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')

function settings (tls) {
  return {
    host: process.env.PGB_HOST,
    port: Number(process.env.PGB_PORT),
    user: process.env.PGB_USER,
    password: process.env.PGB_PASSWORD,
    database: process.env.PGB_DB,
    connectionTimeoutMillis: 10000,
    // The certificate names localhost; we dial an IP.
    ssl: tls ? { ca: fs.readFileSync(process.env.PGB_CA), servername: 'localhost' } : false
  }
}

// Every client counts the 'error' events it emits: an application without a handler would
// crash on each of them.
async function connect (tls = false) {
  const client = new Client(settings(tls))
  client.errorEvents = []
  client.on('error', (error) => client.errorEvents.push(String(error.message)))
  await client.connect()
  return client
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const checks = {
  async plain () {
    const client = await connect()
    const { rows } = await client.query('SELECT 1 AS one')
    await client.end()
    return rows[0].one
  },

  async tls () {
    const client = await connect(true)
    const { rows } = await client.query("SELECT 'over tls' AS v")
    await client.end()
    return rows[0].v
  },

  async error_then_query () {
    const client = await connect()
    let code = null
    try {
      await client.query('SELECT 1/0')
    } catch (error) {
      code = error.code
    }
    const { rows } = await client.query('SELECT 2 AS two')
    await client.end()
    return [code, rows[0].two]
  },

  async cancel_then_statement () {
    const client = await connect()
    const outcomes = []
    for (let round = 0; round < 3; round++) {
      const running = client.query('SELECT pg_sleep(5)')
      await sleep(300)
      new Client(settings(false)).cancel(client, client.activeQuery)
      try {
        await running
        outcomes.push('finished')
      } catch (error) {
        outcomes.push(error.code)
      }
      // pg's cancel() does not wait for the server to close the cancel connection (and at
      // times sends the request twice, straight at PostgreSQL too): give it time to land.
      await sleep(300)
      const { rows } = await client.query("SELECT 'next' AS v, pg_sleep(0.2)")
      outcomes.push(rows[0].v)
    }
    await client.end()
    return outcomes
  },

  async disconnect () {
    // The client's own end() must not surface as an 'error' event.
    const client = await connect()
    await client.query('SELECT 1')
    await client.end()
    await sleep(200)
    return { error_events: client.errorEvents }
  },

  async prepared () {
    const client = await connect()
    const results = []
    for (let n = 0; n < 3; n++) {
      const { rows } = await client.query({ name: 'add_one', text: 'SELECT $1::int + 1 AS v', values: [n] })
      results.push(rows[0].v)
    }
    await client.end()
    return results
  },

  async notify_from_own_session () {
    const client = await connect()
    const received = new Promise((resolve) => client.once('notification', resolve))
    await client.query('LISTEN pgb_channel')
    await client.query("NOTIFY pgb_channel, 'hello'")
    const message = await Promise.race([received, sleep(5000).then(() => null)])
    const { rows } = await client.query('SELECT pg_backend_pid() AS pid')
    await client.end()
    if (message === null) return 'no notification'
    return {
      channel: message.channel,
      payload: message.payload,
      sender_is_own_backend: message.processId === rows[0].pid,
      process_id_is_backend_pid: client.processID === rows[0].pid
    }
  },

  async copy () {
    const client = await connect()
    await client.query('CREATE TEMP TABLE pgb_copy (id int, name text)')
    await new Promise((resolve, reject) => {
      const stream = client.query(copyFrom('COPY pgb_copy (id, name) FROM STDIN'))
      stream.on('error', reject)
      stream.on('finish', resolve)
      for (let i = 0; i < 100; i++) stream.write(`${i}\trow ${i}\n`)
      stream.end()
    })
    const text = await new Promise((resolve, reject) => {
      const chunks = []
      const stream = client.query(copyTo('COPY (SELECT * FROM pgb_copy ORDER BY id) TO STDOUT'))
      stream.on('data', (chunk) => chunks.push(chunk))
      stream.on('error', reject)
      stream.on('end', () => resolve(Buffer.concat(chunks).toString()))
    })
    const { rows } = await client.query('SELECT count(*)::int AS n FROM pgb_copy')
    await client.end()
    return [rows[0].n, text.split('\n').length - 1]
  }
}

async function main () {
  const results = {}
  for (const [name, check] of Object.entries(checks)) {
    try {
      results[name] = await Promise.race([
        check(),
        sleep(30000).then(() => 'took over 30 s')
      ])
    } catch (error) {
      results[name] = `raised ${error.name}: ${error.message}`
    }
  }
  process.stdout.write(JSON.stringify(results, null, 1))
  process.exit(0)
}

main()
