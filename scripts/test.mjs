#!/usr/bin/env node
// Builds the workspace, then runs the test tiers with node's test runner:
//   npm test            unit, integration, end-to-end
//   npm test -- unit    one tier (unit | int | e2e); extra arguments filter file paths
// Integration and end-to-end tests use the real NATS, Redis and Postgres (NATS_URL, REDIS_URL,
// TEST_DATABASE_URL). The last line is the summary CI reads: "N passed, N failed[, N skipped]".
//
// Files run one at a time in each of three lanes side by side (below: which file runs where);
// the second and third lanes' output follows the first's. MFA_TEST_LANES=1 runs everything in
// one lane against the shared servers.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, globSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const tiers = ['unit', 'int', 'e2e'];
const selected = args.filter((a) => tiers.includes(a));
const filters = args.filter((a) => !tiers.includes(a));
const run = selected.length > 0 ? selected : tiers;

const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) {
  console.log('\n0 passed, 1 failed');
  process.exit(1);
}

/** The compiled spec files of a tier, in the order they run. */
function specsOf(tier) {
  const files = [];
  const patterns = [`libs/*/dist/**/*.${tier}.spec.js`, `services/*/dist/**/*.${tier}.spec.js`, `authenticator/dist/**/*.${tier}.spec.js`, `test-e2e/dist/**/*.${tier}.spec.js`];
  for (const pattern of patterns) files.push(...globSync(pattern, { cwd: root }).sort());
  // Compiled specs whose source was moved or deleted stay in dist/ until a clean build: never run them.
  return files.filter((f) => existsSync(join(root, f.replace('/dist/', '/src/').replace(/\.js$/, '.ts'))));
}
const current = tiers.flatMap(specsOf);
const chosen = run.flatMap(specsOf).filter((f) => filters.every((needle) => f.includes(needle)));
if (chosen.length === 0) {
  console.log('no test files matched\n0 passed, 0 failed');
  process.exit(filters.length > 0 ? 1 : 0);
}

/**
 * Three lanes, each running one file at a time:
 * 1. every integration and end-to-end file not named below, against the shared NATS, Redis and
 *    Postgres;
 * 2. the unit files, which use no server, and files that start every NATS and Redis they use
 *    (nats-server, redis-server, clusters of their own, on ports of their own) and use Postgres,
 *    if at all, through servers or databases of their own: the long fault-injection and cluster
 *    runs, which spend most of their time waiting;
 * 3. files that take their servers from testEnv (NATS_URL, REDIS_URL, TEST_DATABASE_URL) and run
 *    here against a nats-server and a redis-server this script starts for the lane, with databases
 *    of the lane's own on the shared Postgres (MFA_TEST_DATABASE_SUFFIX); and more files of the
 *    second lane's kind, so the lanes end at about the same time.
 * Two stacks on one NATS would share durable consumers and queue groups: that is why the first
 * lane's files never run beside each other, and why the third lane has a NATS of its own.
 */
const OWN_SERVERS = [
  'test-e2e/dist/fault-injection.e2e.spec.js',
  'test-e2e/dist/clusters.e2e.spec.js',
  'services/user-settings/dist/oath-import.int.spec.js',
  'libs/service-kit/dist/redis-modes.int.spec.js',
  'test-e2e/dist/backup-restore.e2e.spec.js',
  'test-e2e/dist/master-key-rotation.e2e.spec.js',
  'libs/messaging/dist/follow-cluster.int.spec.js',
  'test-e2e/dist/first-boot.e2e.spec.js',
];
const THIRD_LANE = [
  'test-e2e/dist/cli.e2e.spec.js',
  'test-e2e/dist/contract-fuzz.e2e.spec.js',
  'test-e2e/dist/radius.e2e.spec.js',
  'test-e2e/dist/push.e2e.spec.js',
  'test-e2e/dist/oath-tokens.e2e.spec.js',
  'test-e2e/dist/tenant-offboarding.e2e.spec.js',
  'test-e2e/dist/stack.e2e.spec.js',
  'test-e2e/dist/auth.e2e.spec.js',
  'test-e2e/dist/privacy.e2e.spec.js',
  'test-e2e/dist/telephony.e2e.spec.js',
  'test-e2e/dist/resend.e2e.spec.js',
  'test-e2e/dist/smpp.e2e.spec.js',
  'test-e2e/dist/throttling.e2e.spec.js',
  'test-e2e/dist/push-providers.e2e.spec.js',
  // Of the second lane's kind (servers of their own):
  'test-e2e/dist/event-outbox.e2e.spec.js',
  'test-e2e/dist/redis-loss.e2e.spec.js',
  'test-e2e/dist/redis-scripts.e2e.spec.js',
  'libs/testing/dist/redis-sentinel.int.spec.js',
  'libs/testing/dist/nats-cluster.int.spec.js',
  'libs/testing/dist/redis-cluster.int.spec.js',
  'libs/testing/dist/postgres-replica.int.spec.js',
];
// A renamed or deleted file must not fall silently back to the first lane.
const missing = [...OWN_SERVERS, ...THIRD_LANE].filter((f) => !current.includes(f));
if (missing.length > 0) {
  console.log(`scripts/test.mjs names test files that do not exist: ${missing.join(', ')}\n0 passed, 1 failed`);
  process.exit(1);
}

const oneLane = process.env.MFA_TEST_LANES === '1';
const laneFiles = [[], [], []];
// Unit files use no server: they run in the second lane, which has the least else to do.
const laneOf = (f) => (OWN_SERVERS.includes(f) || f.endsWith('.unit.spec.js') ? 1 : THIRD_LANE.includes(f) ? 2 : 0);
for (const f of chosen) laneFiles[oneLane ? 0 : laneOf(f)].push(f);

/** The third lane's own servers: a nats-server with JetStream and a redis-server, on free ports. */
async function laneServers() {
  const { startNatsServer, startRedisServer } = await import('@mfa/testing');
  const [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
  return {
    // Its databases: mfa_test_lane3, mfa_e2e_lane3 (testDatabaseUrl).
    env: { NATS_URL: nats.url, REDIS_URL: redis.url, MFA_TEST_DATABASE_SUFFIX: '_lane3' },
    stop: () => Promise.all([nats.stop(), redis.stop()]),
  };
}

const work = mkdtempSync(join(tmpdir(), 'mfa-test-'));
/** Lanes under way and the third lane's servers: stopped if this script is interrupted. */
const running = new Set();
const serverStops = new Set();
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of running) child.kill(signal);
    Promise.allSettled([...serverStops].map((stop) => stop())).finally(() => {
      rmSync(work, { recursive: true, force: true });
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  });
}
/** One `node --test` run of `files`, one file at a time: its spec output to `out`, its counts to a file of its own. */
function lane(files, index, out, env = {}) {
  const counts = join(work, `summary-${index}.txt`);
  const child = spawn(
    process.execPath,
    [
      '--test',
      '--test-concurrency=1',
      '--test-timeout=120000',
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${join(root, 'scripts/summary-reporter.mjs')}`,
      `--test-reporter-destination=${counts}`,
      ...files,
    ],
    { cwd: root, stdio: ['ignore', out, out], env: { ...process.env, NODE_ENV: process.env.NODE_ENV ?? 'test', ...env } },
  );
  running.add(child);
  return new Promise((resolve) => {
    child.on('error', (error) => resolve({ status: 1, counts, error }));
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ status: code ?? (signal ? 1 : 0), counts });
    });
  });
}

const names = ['first lane (shared NATS, Redis and Postgres)', 'second lane (servers of their own)', 'third lane (a NATS and a Redis of its own)'];
const started = laneFiles.map((files, i) => ({ files, i })).filter(({ files }) => files.length > 0);
for (const { files, i } of started.slice(1)) console.log(`${names[i]}, beside this one (its output follows): ${files.length} files`);
if (started.length > 1) console.log('');
const runs = await Promise.all(
  started.map(async ({ files, i }) => {
    if (i === 0) return lane(files, i, 'inherit');
    const log = createWriteStream(join(work, `lane-${i}.log`));
    await new Promise((resolve) => log.on('open', resolve));
    let servers;
    let result;
    try {
      if (i === 2) {
        servers = await laneServers();
        serverStops.add(servers.stop);
      }
      result = await lane(files, i, log, servers?.env);
    } catch (error) {
      // The lane's servers did not start (no nats-server or redis-server on PATH, say).
      log.write(`the ${names[i]} could not start: ${String(error?.message ?? error)}\n`);
      result = { status: 1, counts: join(work, `summary-${i}.txt`), error };
    } finally {
      await servers?.stop().catch(() => undefined);
    }
    await new Promise((resolve) => log.end(resolve));
    return result;
  }),
);
for (const { files, i } of started) {
  if (i === 0) continue;
  const named = files.filter((f) => !f.endsWith('.unit.spec.js')).map((f) => f.replace(/^.*\/dist\//, ''));
  const units = files.length - named.length;
  console.log(`\n---- ${names[i]}: ${[...(units > 0 ? [`${units} unit files`] : []), ...named].join(', ')}\n`);
  process.stdout.write(readFileSync(join(work, `lane-${i}.log`)));
}

// One summary line for the lanes: their "N passed, N failed[, N skipped]" lines added up.
let passed = 0;
let failed = 0;
let skipped = 0;
for (const run of runs) {
  if (run.error) console.log(`a test lane did not start: ${String(run.error)}`);
  const line = existsSync(run.counts) ? /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?/m.exec(readFileSync(run.counts, 'utf8')) : null;
  // A lane that died before its summary counts as a failure.
  if (!line) {
    failed++;
    continue;
  }
  passed += Number(line[1]);
  failed += Number(line[2]);
  skipped += Number(line[3] ?? 0);
}
rmSync(work, { recursive: true, force: true });
console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(runs.every((r) => r.status === 0) && failed === 0 ? 0 : 1);
