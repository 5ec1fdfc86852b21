#!/usr/bin/env node
// Builds the workspace, then runs the test tiers with node's test runner:
//   npm test            unit, integration, end-to-end
//   npm test -- unit    one tier (unit | int | e2e); extra arguments filter file paths
// Integration and end-to-end tests use the real NATS, Redis and Postgres (NATS_URL, REDIS_URL,
// TEST_DATABASE_URL). The last line is the summary CI reads: "N passed, N failed[, N skipped]".
import { spawnSync } from 'node:child_process';
import { existsSync, globSync } from 'node:fs';
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

const result = spawnSync(
  process.execPath,
  [
    '--test',
    '--test-concurrency=1',
    '--test-timeout=120000',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${join(root, 'scripts/summary-reporter.mjs')}`,
    '--test-reporter-destination=stdout',
    ...chosen,
  ],
  { cwd: root, stdio: 'inherit', env: { ...process.env, NODE_ENV: process.env.NODE_ENV ?? 'test' } },
);
process.exit(result.status ?? 1);
