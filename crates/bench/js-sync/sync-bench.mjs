#!/usr/bin/env node
// Firehose benchmark of the JavaScript reference consumer, @atproto/sync, on a
// Butterfly frame log (each frame preceded by its length as 4 big-endian bytes),
// for side-by-side figures with `butterfly-bench firehose --js`.
//
// Usage (Node >= 22, e.g. the one in shared/peers):
//   node crates/bench/js-sync/sync-bench.mjs FRAMES.log DOCS.json [--iterations N] [--threads N]
//
// Every frame goes through @atproto/sync's own code, without a websocket:
// - decode: what `Subscription` does with each websocket message:
//   `ensureChunkIsMessage` (frame header + body, DAG-CBOR), `$type` from the
//   header, then the `Firehose`'s lexicon validation
//   (`com.atproto.sync.subscribeRepos.$message.safeParse`).
// - verify: decode, then `Firehose.parseEvt`: for #commit
//   `parseCommitAuthenticated` (verifyProofs: CAR read with block hash checks,
//   commit decode, DID match, signature, an MST lookup per op; then the records
//   are decoded), for #identity DID document + handle check, for #account the
//   status, for #sync the CAR read. The resolver is a real `IdResolver` with a
//   `MemoryCache`, whose DID method resolution and handle lookup are replaced
//   by lookups in DOCS.json: no network. Its cache is filled before timing.
//
// stdout: one JSON line per measurement. stderr: progress and the first errors.

import { readFileSync } from 'node:fs'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Firehose } from '@atproto/sync'
import { IdResolver, MemoryCache } from '@atproto/identity'
import { ensureChunkIsMessage, Frame } from '@atproto/xrpc-server'

const SCRIPT = fileURLToPath(import.meta.url)
// The installed version ('exports' hides package.json from require).
const VERSION = JSON.parse(
  readFileSync(
    path.join(path.dirname(SCRIPT), 'node_modules/@atproto/sync/package.json'),
    'utf8',
  ),
).version
const NSID = 'com.atproto.sync.subscribeRepos'

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`)
  process.stderr.write(
    'usage: node sync-bench.mjs FRAMES.log DOCS.json [--iterations N] [--threads N]\n',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { frames: null, docs: null, iterations: 3, threads: 2 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--iterations' || a === '-n' || a === '--threads') {
      const v = Number.parseInt(argv[++i] ?? '', 10)
      if (!Number.isInteger(v) || v < 1) usage(`bad ${a} value`)
      if (a === '--threads') opts.threads = v
      else opts.iterations = v
    } else if (a === '-h' || a === '--help') {
      usage()
    } else if (a.startsWith('-')) {
      usage(`unknown option: ${a}`)
    } else if (opts.frames === null) {
      opts.frames = a
    } else if (opts.docs === null) {
      opts.docs = a
    } else {
      usage(`unexpected argument: ${a}`)
    }
  }
  if (opts.frames === null || opts.docs === null) usage('missing FRAMES.log or DOCS.json')
  return opts
}

function readFrames(path) {
  const buf = readFileSync(path)
  const frames = []
  let off = 0
  while (off < buf.length) {
    if (off + 4 > buf.length) throw new Error(`${path}: truncated length prefix`)
    const len = buf.readUInt32BE(off)
    off += 4
    if (off + len > buf.length) throw new Error(`${path}: truncated frame`)
    frames.push(buf.subarray(off, off + len))
    off += len
  }
  return frames
}

// A real IdResolver (with its DID document validation and cache), answering
// from DOCS.json instead of the network.
async function offlineResolver(docs) {
  const byDid = new Map()
  const byHandle = new Map()
  for (const doc of docs) {
    byDid.set(doc.id, doc)
    for (const aka of doc.alsoKnownAs ?? []) {
      if (aka.startsWith('at://')) byHandle.set(aka.slice(5), doc.id)
    }
  }
  const idResolver = new IdResolver({ didCache: new MemoryCache() })
  idResolver.did.resolveNoCheck = async (did) => byDid.get(did) ?? null
  idResolver.handle.resolve = async (handle) => byHandle.get(handle)
  // Warm the cache, as a long-running consumer's would be (keys are parsed
  // before timing on the Rust side too).
  for (const did of byDid.keys()) await idResolver.did.resolve(did)
  return idResolver
}

function newFirehose(idResolver, errors) {
  const firehose = new Firehose({
    idResolver,
    service: 'ws://127.0.0.1:1', // never connected: start() is not called
    handleEvent: async () => {},
    onError: (err) => errors.push(err),
  })
  // The lexicon validation the Firehose hands to its Subscription.
  const validate = firehose.sub.opts.validate
  return { firehose, validate }
}

// What Subscription does with each binary websocket message, then validation.
function decodeFrame(bytes, validate) {
  const message = ensureChunkIsMessage(bytes)
  const t = message.header.t
  const body = message.body
  const typed =
    body && typeof body === 'object' && t !== undefined
      ? { ...body, $type: t.startsWith('#') ? NSID + t : t }
      : body
  return validate(typed)
}

function newTally() {
  return { frames: 0, commits: 0, verified: 0, rejected: 0, errors: [] }
}

function reject(tally, what) {
  tally.rejected++
  if (tally.errors.length < 5) tally.errors.push(what)
}

function errText(err) {
  let s = String(err?.message ?? err)
  if (err?.cause) s += `: ${errText(err.cause)}`
  return s
}

function decodeAll(frames, validate, errors) {
  const tally = newTally()
  for (const bytes of frames) {
    tally.frames++
    errors.length = 0
    let evt
    try {
      evt = decodeFrame(bytes, validate)
    } catch (err) {
      reject(tally, `decode: ${errText(err)}`)
      continue
    }
    if (evt === undefined) {
      reject(tally, `validation: ${errText(errors[0])}`)
      continue
    }
    if (evt.$type === `${NSID}#commit`) tally.commits++
  }
  return tally
}

async function verifyAll(frames, firehose, validate, errors) {
  const tally = newTally()
  for (const bytes of frames) {
    tally.frames++
    errors.length = 0
    let evt
    try {
      evt = decodeFrame(bytes, validate)
    } catch (err) {
      reject(tally, `decode: ${errText(err)}`)
      continue
    }
    if (evt === undefined) {
      reject(tally, `validation: ${errText(errors[0])}`)
      continue
    }
    const isCommit = evt.$type === `${NSID}#commit`
    if (isCommit) tally.commits++
    const out = await firehose.parseEvt(evt)
    if (errors.length > 0) {
      reject(tally, `${evt.$type} ${evt.repo ?? evt.did}: ${errText(errors[0])}`)
      continue
    }
    if (isCommit) {
      // parseCommitAuthenticated drops ops it could not verify rather than failing.
      if (out.length === evt.ops.length) tally.verified++
      else reject(tally, `#commit ${evt.repo}: ${evt.ops.length - out.length} ops unverified`)
    }
  }
  return tally
}

function line(phase, threads, seconds, tally, iterations, steps) {
  return JSON.stringify({
    peer: '@atproto/sync',
    version: VERSION,
    node: process.version,
    phase,
    threads,
    frames: tally.frames,
    commits: tally.commits,
    verified: tally.verified,
    rejected: tally.rejected,
    seconds,
    frames_per_s: tally.frames / seconds,
    commits_per_s: (phase === 'verify' ? tally.verified : tally.commits) / seconds,
    iterations,
    steps,
  })
}

const DECODE_STEPS =
  'ensureChunkIsMessage (@atproto/xrpc-server Frame.fromBytes, lex-cbor) + $type + Firehose lexicon validation (subscribeRepos.$message.safeParse)'
const VERIFY_STEPS =
  'decode; Firehose.parseEvt: #commit parseCommitAuthenticated = verifyProofs (readCarWithRoot with block hash check, commit decode, DID match, signature via @atproto/crypto with key from IdResolver cache, MST get per op) + CAR read + record decode; no sync 1.1 inversion, no prevData chain, no rev order; #identity DID doc + handle check; #account status; #sync CAR read only (no signature)'

function hashDid(did, n) {
  let h = 2166136261
  for (let i = 0; i < did.length; i++) {
    h ^= did.charCodeAt(i)
    h = Math.imul(h, 16777619)
  }
  return (h >>> 0) % n
}

function shardFrames(frames, n) {
  const shards = Array.from({ length: n }, () => [])
  for (const bytes of frames) {
    let shard = 0
    try {
      const frame = Frame.fromBytes(bytes)
      const did = frame.body?.repo ?? frame.body?.did
      if (typeof did === 'string') shard = hashDid(did, n)
    } catch {
      // undecodable frames go to shard 0 and are counted there
    }
    shards[shard].push(bytes)
  }
  return shards
}

async function worker() {
  const { frames, docs } = workerData
  const idResolver = await offlineResolver(docs)
  const errors = []
  const { firehose, validate } = newFirehose(idResolver, errors)
  const views = frames.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength))
  parentPort.on('message', async (msg) => {
    if (msg === 'run') {
      const tally = await verifyAll(views, firehose, validate, errors)
      parentPort.postMessage(tally)
    } else {
      process.exit(0)
    }
  })
  parentPort.postMessage('ready')
}

async function parallelVerify(frames, docs, threads, iterations) {
  const shards = shardFrames(frames, threads)
  const workers = shards.map(
    (shard) =>
      new Worker(SCRIPT, {
        workerData: { frames: shard.map((b) => new Uint8Array(b)), docs },
      }),
  )
  const next = (w) =>
    new Promise((resolve, reject) => {
      w.once('message', resolve)
      w.once('error', reject)
    })
  await Promise.all(workers.map(next))
  let best = null
  for (let i = 0; i < iterations; i++) {
    const start = process.hrtime.bigint()
    const results = workers.map(next)
    workers.forEach((w) => w.postMessage('run'))
    const tallies = await Promise.all(results)
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    const total = newTally()
    for (const t of tallies) {
      total.frames += t.frames
      total.commits += t.commits
      total.verified += t.verified
      total.rejected += t.rejected
      total.errors.push(...t.errors.slice(0, 5 - total.errors.length))
    }
    process.stderr.write(`  verify ${threads} threads, iteration ${i + 1}: ${seconds.toFixed(3)} s\n`)
    if (!best || seconds < best.seconds) best = { seconds, tally: total }
  }
  workers.forEach((w) => w.postMessage('exit'))
  return best
}

async function best(iterations, label, run) {
  let best = null
  for (let i = 0; i < iterations; i++) {
    globalThis.gc?.()
    const start = process.hrtime.bigint()
    const tally = await run()
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    process.stderr.write(`  ${label}, iteration ${i + 1}: ${seconds.toFixed(3)} s\n`)
    if (!best || seconds < best.seconds) best = { seconds, tally }
  }
  return best
}

function report(phase, threads, result, iterations, steps) {
  process.stdout.write(line(phase, threads, result.seconds, result.tally, iterations, steps) + '\n')
  for (const e of result.tally.errors) {
    process.stderr.write(`  @atproto/sync ${phase} (${threads} threads) rejected: ${e}\n`)
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const frames = readFrames(opts.frames)
  const docs = JSON.parse(readFileSync(opts.docs, 'utf8'))
  process.stderr.write(
    `@atproto/sync ${VERSION} on Node ${process.version}: ${frames.length} frames, ${docs.length} identities, best of ${opts.iterations}\n`,
  )
  const idResolver = await offlineResolver(docs)
  const errors = []
  const { firehose, validate } = newFirehose(idResolver, errors)

  const decode = await best(opts.iterations, 'decode', async () =>
    decodeAll(frames, validate, errors),
  )
  report('decode', 1, decode, opts.iterations, DECODE_STEPS)

  const verify = await best(opts.iterations, 'verify 1 thread', () =>
    verifyAll(frames, firehose, validate, errors),
  )
  report('verify', 1, verify, opts.iterations, VERIFY_STEPS)

  if (opts.threads > 1) {
    const par = await parallelVerify(frames, docs, opts.threads, opts.iterations)
    report(
      'verify',
      opts.threads,
      par,
      opts.iterations,
      `${VERIFY_STEPS}; split by DID hash over ${opts.threads} worker_threads`,
    )
  }
}

if (isMainThread) {
  main().catch((err) => {
    process.stderr.write(`${err?.stack ?? err}\n`)
    process.exit(1)
  })
} else {
  worker().catch((err) => {
    process.stderr.write(`${err?.stack ?? err}\n`)
    process.exit(1)
  })
}
