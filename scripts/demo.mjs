#!/usr/bin/env node
// `npm run demo`: acts as an identity provider against the running stack (npm start).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b', 'test-e2e'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
const { runDemo } = await import(join(root, 'test-e2e/dist/demo.js'));
process.exitCode = await runDemo({ out: (line) => console.log(line) });
