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
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

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

// COPY … FROM STDIN: PGlite's backend reads its input from the one message it is handed, so the
// CopyData that follows never reaches it. Answer CopyInResponse here, gather the CopyData, then run
// the same statement FROM '/dev/blob' (PGlite's way to feed COPY) and send back its answer.
const COPY_IN = /^\s*COPY\b[\s\S]*\bFROM\s+STDIN\b/i
const decoder = new TextDecoder()

function copyInResponse(sql) {
  const binary = /FORMAT\s+BINARY|\bBINARY\b/i.test(sql)
  const cols = /^\s*COPY\s+[^(]+\(([^)]*)\)\s+FROM/i.exec(sql)
  const n = cols ? cols[1].split(',').length : 0
  const msg = new Uint8Array(1 + 4 + 1 + 2 + 2 * n)
  const view = new DataView(msg.buffer)
  msg[0] = 0x47 // 'G'
  view.setInt32(1, msg.length - 1)
  msg[5] = binary ? 1 : 0
  view.setInt16(6, n)
  for (let i = 0; i < n; i++) view.setInt16(8 + 2 * i, binary ? 1 : 0)
  return msg
}

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0))
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

const handleData = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = async function (data) {
  let bytes = new Uint8Array(data)
  if (!this.copy) {
    if (bytes[0] !== 0x51 || bytes.length < 5) return handleData.call(this, data)
    const len = new DataView(bytes.buffer, bytes.byteOffset).getInt32(1)
    const sql = decoder.decode(bytes.subarray(5, 1 + len - 1))
    if (1 + len > bytes.length || !COPY_IN.test(sql)) return handleData.call(this, data)
    this.copy = { sql, data: [], pending: new Uint8Array(0) }
    this.socket.write(copyInResponse(sql))
    bytes = bytes.subarray(1 + len)
  }
  const copy = this.copy
  let buf = concat([copy.pending, bytes])
  while (buf.length >= 5) {
    const len = new DataView(buf.buffer, buf.byteOffset).getInt32(1)
    if (buf.length < 1 + len) break
    const type = buf[0]
    const body = buf.subarray(5, 1 + len)
    buf = buf.subarray(1 + len)
    if (type === 0x64) {
      copy.data.push(body.slice()) // 'd' CopyData
    } else if (type === 0x63 || type === 0x66) {
      // 'c' CopyDone: run it from the blob; 'f' CopyFail: fail the statement as the server would
      this.copy = null
      const sql =
        type === 0x63
          ? copy.sql.replace(/\bFROM\s+STDIN\b/i, "FROM '/dev/blob'")
          : `DO $$BEGIN RAISE EXCEPTION USING ERRCODE = '57014', MESSAGE = $m$COPY from stdin failed: ${decoder
              .decode(body)
              .replace(/\$m\$|\0/g, '')}$m$; END$$`
      if (type === 0x63) await db._handleBlob(new Blob([concat(copy.data)]))
      const out = await db.execProtocolRaw(simpleQuery(sql))
      await db._cleanupBlob()
      this.socket.write(Buffer.from(out))
      if (buf.length) return this.handleData(buf)
      return out.length
    }
  }
  copy.pending = buf.slice()
  return 0
}

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
