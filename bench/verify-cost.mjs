#!/usr/bin/env node
// The cost of the challenge service's own TOTP path, without NATS, Nest or JetStream: CPU of this
// process and of Redis per start and per verify, for one build. It runs CHECKOUT's ChallengeService
// in-process (a stub stands in for the event publisher) against REDIS_URL, for USERS TOTP users
// (IN_FLIGHT requests in flight, 32 unless set). Redis figures come from INFO cpu and
// commandstats, so they are only meaningful on a Redis that nothing else uses.
//
//   node bench/verify-cost.mjs [CHECKOUT, default this one] [USERS, default 5000]
//
// VERIFY_COST_PAIRS=1 measures pairs instead: each user's start followed at once by its verify (the
// code computed in the loop, one HMAC of the IdP's work counted here), as the stack sees them.
// REDIS_WRITES chooses how the client writes: `corked` (coalesceWrites, what builds that have it
// use), `auto-pipelining` (what builds before it used) or `per-command` (neither). Run it with
// --trace-gc-nvp to see what the young generation keeps (docs/performance.md, ninth part).
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const checkout = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
const users = Number(process.argv[3] ?? 5000);
const inFlight = Number(process.env.IN_FLIGHT ?? 32);
const load = (path) => import(pathToFileURL(join(checkout, path)).href);

const { ChallengeService } = await load('services/auth-challenge/dist/application/challenge.service.js');
const { ChallengeStore } = await load('services/auth-challenge/dist/adapters/challenge.store.js');
const { loadAuthChallengeConfig } = await load('services/auth-challenge/dist/config.js');
const { RedisKeys, UserProjectionWriter, parseChallengeId } = await load('libs/projection/dist/index.js');
const { hotp, totpStep, randomToken } = await load('libs/crypto/dist/index.js');
const { defaultTenantSettings } = await load('libs/contracts/dist/index.js');
const { Redis } = await load('node_modules/ioredis/built/index.js');

const coalesceWrites = await load('libs/service-kit/dist/redis-writes.js').then((m) => m.coalesceWrites, () => undefined);
const redisWrites = process.env.REDIS_WRITES ?? (coalesceWrites ? 'corked' : 'auto-pipelining');
if (!['corked', 'auto-pipelining', 'per-command'].includes(redisWrites)) throw new Error(`REDIS_WRITES: ${redisWrites}?`);
if (redisWrites === 'corked' && !coalesceWrites) throw new Error(`${checkout} has no coalesceWrites`);
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { enableAutoPipelining: redisWrites === 'auto-pipelining' });
if (redisWrites === 'corked') coalesceWrites(redis);
const config = loadAuthChallengeConfig({ NODE_ENV: 'development', LOG_LEVEL: 'error' });
const settings = defaultTenantSettings();
const quiet = { error() {}, warn() {}, info() {}, debug() {} };
// Builds with the decision outbox (issue 7) take it as the second argument.
const outbox = await load('services/auth-challenge/dist/adapters/outbox.js').then(({ Outbox }) => new Outbox(redis, quiet), () => undefined);
// Builds with replicated decisions (issue 17) take the writer as the store's second argument (no
// WAIT here, as with one Redis), and per-IP locks (issue 8) after the tenants: none in force.
const writes = await load('libs/service-kit/dist/replicated-writes.js').then(
  ({ ReplicatedWrites }) => new ReplicatedWrites(redis, { replicas: 0, timeoutMs: 0 }, quiet),
  () => undefined,
);
const ipLocks = writes ? [{ locked: () => false, throttledUntil: () => undefined }] : [];
const service = new ChallengeService(
  new ChallengeStore(redis, writes),
  ...(outbox ? [outbox] : []),
  { get: () => settings, has: () => true, ready: true, lookup: async () => true },
  ...ipLocks,
  { publish: async () => ({ stream: 'stub', seq: 1, duplicate: false }) },
  { smsCode: () => '000000', challengeNonce: () => randomToken(16) },
  config,
  { name: 'verify-cost', ip: '127.0.0.1' },
  quiet,
);
const tenantId = `verify-cost-${Date.now().toString(36)}`;
const secretOf = (i) => createHash('sha1').update(`verify-cost-${i}`).digest();
const writer = new UserProjectionWriter(redis, config.keyring);
for (let i = 0; i < users; i += 500) {
  const batch = [];
  for (let k = i; k < Math.min(users, i + 500); k++) {
    batch.push(writer.apply({ tenantId, userId: `u${k}`, seq: 1, methods: ['totp'], defaultMethod: 'totp',
      totpTokens: [{ tokenId: 'app', secret: secretOf(k), digits: 6, period: 30, activatedStep: 0 }] }));
  }
  await Promise.all(batch);
}

async function redisCounters() {
  const info = await redis.info('all');
  const num = (re) => Number(re.exec(info)?.[1] ?? 0);
  return { cpu: num(/used_cpu_user:([\d.]+)/) + num(/used_cpu_sys:([\d.]+)/), calls: num(/cmdstat_evalsha:calls=(\d+)/), usec: num(/cmdstat_evalsha:calls=\d+,usec=(\d+)/) };
}

/** Runs `request(i)` for every user, `inFlight` at a time; per request: CPU here, CPU in Redis, script calls. */
async function measure(request) {
  const r0 = await redisCounters();
  const c0 = process.cpuUsage();
  let next = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < users) await request(next++);
  }));
  const c1 = process.cpuUsage();
  const r1 = await redisCounters();
  const calls = r1.calls - r0.calls;
  return `node ${((c1.user + c1.system - c0.user - c0.system) / users).toFixed(1)} µs, redis ${(((r1.cpu - r0.cpu) * 1e6) / users).toFixed(1)} µs, ` +
    `${(calls / users).toFixed(2)} script calls of ${(calls ? (r1.usec - r0.usec) / calls : 0).toFixed(1)} µs`;
}

const challenges = [];
if (process.env.VERIFY_COST_PAIRS) {
  const pairs = await measure(async (i) => {
    const started = await service.start({ tenantId, userId: `u${i}`, method: 'totp' }, new Date());
    if (started.status !== 'pending') throw new Error(`start: ${JSON.stringify(started)}`);
    challenges[i] = started.challengeId;
    const reply = await service.verify({ tenantId, challengeId: started.challengeId, code: hotp(secretOf(i), totpStep(Date.now())) }, new Date());
    if (reply.status !== 'approved') throw new Error(`verify: ${JSON.stringify(reply)}`);
  });
  console.log(`${checkout} (${redisWrites}, ${inFlight} in flight)\n  pairs:  ${pairs}`);
} else {
  const start = await measure(async (i) => {
    const reply = await service.start({ tenantId, userId: `u${i}` , method: 'totp' }, new Date());
    if (reply.status !== 'pending') throw new Error(`start: ${JSON.stringify(reply)}`);
    challenges[i] = reply.challengeId;
  });
  // The codes are computed before measuring: they are the IdP's work, not the service's.
  const codes = challenges.map((_, i) => hotp(secretOf(i), totpStep(Date.now())));
  const verify = await measure(async (i) => {
    const reply = await service.verify({ tenantId, challengeId: challenges[i], code: codes[i] }, new Date());
    if (reply.status !== 'approved') throw new Error(`verify: ${JSON.stringify(reply)}`);
  });
  console.log(`${checkout} (${redisWrites}, ${inFlight} in flight)\n  start:  ${start}\n  verify: ${verify}`);
}

const keys = [];
for (const id of challenges) {
  const { tag, nonce } = parseChallengeId(id);
  keys.push(RedisKeys.user(tag), RedisKeys.totp(tag), RedisKeys.totpSteps(tag), RedisKeys.challenge(tag, nonce));
  if (keys.length >= 400) await redis.unlink(...keys.splice(0));
}
if (keys.length) await redis.unlink(...keys);
await outbox?.flush();
await redis.quit();
