#!/usr/bin/env node
// Builds the workspace, then runs the test tiers with node's test runner:
//   npm test            unit, integration, end-to-end
//   npm test -- unit    one tier (unit | int | e2e); extra arguments filter file paths
// Integration and end-to-end tests use the real NATS, Redis and Postgres (NATS_URL, REDIS_URL,
// TEST_DATABASE_URL). The last line is the summary CI reads: "N passed, N failed[, N skipped]".
//
// Files run one at a time against those shared servers (two stacks on one NATS would share
// durable consumers). The few files that use only servers of their own (OWN_SERVERS_ONLY) run in a
// second lane beside them, one at a time too; that lane's output follows the first's.
// MFA_TEST_LANES=1 runs everything in one lane.
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

const files = [];
for (const tier of run) {
  const patterns = [`libs/*/dist/**/*.${tier}.spec.js`, `services/*/dist/**/*.${tier}.spec.js`, `authenticator/dist/**/*.${tier}.spec.js`, `test-e2e/dist/**/*.${tier}.spec.js`];
  for (const pattern of patterns) files.push(...globSync(pattern, { cwd: root }).sort());
}
// Compiled specs whose source was moved or deleted stay in dist/ until a clean build: never run them.
const current = files.filter((f) => existsSync(join(root, f.replace('/dist/', '/src/').replace(/\.js$/, '.ts'))));
const chosen = current.filter((f) => filters.every((needle) => f.includes(needle)));
if (chosen.length === 0) {
  console.log('no test files matched\n0 passed, 0 failed');
  process.exit(filters.length > 0 ? 1 : 0);
}

/**
 * Specs that start every server they use (nats-server, redis-server, Postgres clusters of their
 * own, on ports of their own) and never touch the shared NATS, Redis or Postgres: the long
 * fault-injection and cluster runs, which spend most of their time waiting on faults and expiries.
 */
const OWN_SERVERS_ONLY = ['test-e2e/dist/fault-injection.e2e.spec.js', 'test-e2e/dist/clusters.e2e.spec.js'];

const twoLanes = process.env.MFA_TEST_LANES !== '1';
const second = twoLanes ? chosen.filter((f) => OWN_SERVERS_ONLY.includes(f)) : [];
const first = chosen.filter((f) => !second.includes(f));
const lanes = [first, second].filter((files) => files.length > 0);

const work = mkdtempSync(join(tmpdir(), 'mfa-test-'));
/** One `node --test` run of `files`, one file at a time: its spec output to `out`, its counts to a file of its own. */
function lane(files, index, out) {
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
    { cwd: root, stdio: ['ignore', out, out], env: { ...process.env, NODE_ENV: process.env.NODE_ENV ?? 'test' } },
  );
  return new Promise((resolve) => {
    child.on('error', (error) => resolve({ status: 1, counts, error }));
    child.on('exit', (code, signal) => resolve({ status: code ?? (signal ? 1 : 0), counts }));
  });
}

if (lanes.length > 1) console.log(`second lane, beside this one (its output follows): ${second.join(', ')}\n`);
const laneLog = join(work, 'lane-2.log');
const runs = await Promise.all(
  lanes.map(async (files, i) => {
    if (i === 0) return lane(files, i, 'inherit');
    const log = createWriteStream(laneLog);
    await new Promise((resolve) => log.on('open', resolve));
    const result = await lane(files, i, log);
    await new Promise((resolve) => log.end(resolve));
    return result;
  }),
);
if (lanes.length > 1) {
  console.log(`\n---- second lane: ${second.join(', ')}\n`);
  process.stdout.write(readFileSync(laneLog));
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
