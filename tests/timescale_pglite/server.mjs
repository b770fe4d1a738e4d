// Test-only: PostgreSQL 17 + TimescaleDB (PGlite, WebAssembly) on a local TCP port.
//
//   node server.mjs [port]      (0 or nothing: a free port)
//
// Prints one JSON line {"port": N, "timescaledb": "2.x", "license": "..."} once it accepts
// connections, then serves until stdin closes or it gets SIGTERM/SIGINT, so it never outlives
// the test process that started it (tests/support/timescale.py).
//
// What it is not: one database ("postgres"; CREATE DATABASE works but every connection lands in the
// same one), one connection at a time (others wait in a queue), no background workers (policies
// never run by themselves: CALL run_job(id) runs one), the community license only.
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = Number(process.argv[2] || 0)
const db = await PGlite.create({ extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
const info = (
  await db.query(
    "SELECT extversion AS v, current_setting('timescaledb.license', true) AS license FROM pg_extension WHERE extname = 'timescaledb'"
  )
).rows[0]

// PGlite is one backend: what a client leaves in its session (an open transaction, prepared
// statements, temp tables, advisory locks, SET) would be the next client's. Reset it after each
// client, as a new backend per connection would be.
const encoder = new TextEncoder()
function simpleQuery(sql) {
  const body = encoder.encode(sql + '\0')
  const msg = new Uint8Array(5 + body.length)
  msg[0] = 0x51 // 'Q'
  new DataView(msg.buffer).setInt32(1, 4 + body.length)
  msg.set(body, 5)
  return msg
}
async function resetSession() {
  // PGlite itself starts with search_path = public, which DISCARD ALL resets: set it again.
  for (const sql of ['ROLLBACK', 'DISCARD ALL', 'SET search_path TO public']) {
    await db.execProtocolRaw(simpleQuery(sql)).catch((e) => console.error('pglite reset failed:', e.message))
  }
}
const runExclusive = db.runExclusive.bind(db)
db.runExclusive = (fn) =>
  runExclusive(async () => {
    try {
      return await fn()
    } finally {
      await resetSession()
    }
  })

// A queued client waits up to 10 minutes (the default, 1 minute, is shorter than some tests).
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1', connectionQueueTimeout: 600_000 })
// A client that disconnects abruptly must not take the server down with it.
server.addEventListener('error', (e) => console.error('pglite socket error:', e.detail?.message ?? e.detail))
process.on('uncaughtException', (e) => console.error('pglite server error:', e.message))
await server.start()

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  await server.stop().catch(() => {})
  await db.close().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()

console.log(JSON.stringify({ port: server.port, timescaledb: info.v, license: info.license }))
