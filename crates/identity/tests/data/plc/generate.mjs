// Writes the reference_*.json audit logs of this folder with the reference implementation
// (@did-plc/lib and @atproto/crypto from ../shared/peers), so that the tests check Butterfly
// against code it shares nothing with. Keys come from fixed bytes; timestamps are chosen; the
// `nullified` flags are the ones the reference's own assureValidNextOp returns, with Date.now
// set to each operation's createdAt (the directory checks the 72h window against its clock).
//
// Run from the project root:
//   node crates/identity/tests/data/plc/generate.mjs ../shared/peers
// (the one-time capture of the other fixtures, from a live network, is described in README.md).

import { createRequire } from 'node:module'
import { writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const peers = resolve(process.argv[2] ?? '../shared/peers')
const require = createRequire(join(peers, 'package.json'))
const plc = require('@did-plc/lib')
const { Secp256k1Keypair, P256Keypair } = require('@atproto/crypto')
const here = dirname(fileURLToPath(import.meta.url))

// The CID of an operation, computed by the reference library.
const cidOf = async (operation) => (await plc.getLastOpWithCid([operation])).cid
const bytes = (seed) => new Uint8Array(32).fill(seed)
const at = (hours) => new Date(Date.UTC(2024, 0, 1) + hours * 3600 * 1000)

// Appends `operation` to `log` as the directory would: validate against the entries not yet
// nullified, at time `createdAt`, then mark what it nullifies.
async function submit(log, did, operation, createdAt) {
  const realNow = Date.now
  Date.now = () => createdAt.getTime()
  try {
    const live = log.filter((entry) => !entry.nullified)
    const { nullified } = await plc.assureValidNextOp(did, live, operation)
    for (const entry of log) {
      if (nullified.some((cid) => cid.equals(entry.cid))) entry.nullified = true
    }
  } finally {
    Date.now = realNow
  }
  const cid = await cidOf(operation)
  log.push({ did, operation, cid, nullified: false, createdAt })
}

function write(name, log) {
  const json = log.map((entry) => ({
    did: entry.did,
    operation: entry.operation,
    cid: entry.cid.toString(),
    nullified: entry.nullified,
    createdAt: entry.createdAt.toISOString(),
  }))
  writeFileSync(join(here, name), JSON.stringify(json, null, 2) + '\n')
}

async function recovery() {
  const r0 = await P256Keypair.import(bytes(10))
  const r1 = await Secp256k1Keypair.import(bytes(11))
  const r2 = await Secp256k1Keypair.import(bytes(12))
  const signing = await Secp256k1Keypair.import(bytes(13))
  const rotationKeys = [r0.did(), r1.did(), r2.did()]
  const base = plc.formatAtprotoOp({
    signingKey: signing.did(),
    handle: 'recover.test',
    pds: 'https://pds.example.com',
    rotationKeys,
    prev: null,
  })
  const genesis = await plc.signOperation(base, r2)
  const did = await plc.didForCreateOp(genesis)
  const log = []
  await submit(log, did, genesis, at(0))
  // r2, the weakest key, changes the handle and then the PDS...
  const hijack = await plc.updateHandleOp(genesis, r2, 'hijacked.test')
  await submit(log, did, hijack, at(1))
  const hijackPds = await plc.updatePdsOp(hijack, r2, 'https://evil.example.com')
  await submit(log, did, hijackPds, at(2))
  // ...r1 forks from the genesis operation exactly 72h after the first hijack, nullifying both...
  const recover = await plc.updateHandleOp(genesis, r1, 'recovered.test')
  await submit(log, did, recover, at(73))
  // ...r2 tombstones the DID, and r0 undoes that too.
  const tombstone = await plc.tombstoneOp(await cidOf(recover), r2)
  await submit(log, did, tombstone, at(74))
  const revive = await plc.updatePdsOp(recover, r0, 'https://new.example.com')
  await submit(log, did, revive, at(75))
  write('reference_recovery_audit.json', log)
}

async function legacy() {
  const recoveryKey = await Secp256k1Keypair.import(bytes(20))
  const signing = await Secp256k1Keypair.import(bytes(21))
  // The legacy format: a bare handle, and here a service without a scheme, which normalization
  // turns into https://pds.legacy.test.
  const create = await plc.deprecatedSignCreate(
    {
      type: 'create',
      signingKey: signing.did(),
      recoveryKey: recoveryKey.did(),
      handle: 'legacy.test',
      service: 'pds.legacy.test',
      prev: null,
    },
    signing,
  )
  const did = await plc.didForCreateOp(create)
  const log = []
  await submit(log, did, create, at(0))
  const moved = await plc.updateHandleOp(create, recoveryKey, 'moved.test')
  await submit(log, did, moved, at(24))
  write('reference_legacy_create_audit.json', log)
}

await recovery()
await legacy()
