#!/usr/bin/env node
// `npm run test:compose`: builds, then runs the docker-compose test (test-e2e/src/compose.docker.spec.ts),
// which starts its own Docker daemon; it skips, saying why, where it cannot run (not root, too
// little disk). Ends with the summary line the CI reads.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
const run = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-reporter=tap', '--test-reporter-destination=stdout', `--test-reporter-destination=${join(root, 'test-e2e/dist/compose.tap')}`, join(root, 'test-e2e/dist/compose.docker.spec.js')], { cwd: root, stdio: 'inherit' });
const { readFileSync } = await import('node:fs');
const tap = readFileSync(join(root, 'test-e2e/dist/compose.tap'), 'utf8');
const count = (k) => Number(new RegExp(`^# ${k} (\\d+)`, 'm').exec(tap)?.[1] ?? 0);
const skipped = count('skipped');
console.log(`${count('pass')} passed, ${count('fail')} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(run.status ?? 1);
