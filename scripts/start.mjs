#!/usr/bin/env node
// `npm start`: builds the workspace and runs the five services and the operators' console against NATS, Redis and Postgres
// (NATS_URL, REDIS_URL, DATABASE_URL; defaults are the local servers). Each service creates what
// it needs if missing: streams and consumers (all), the database and its migrations (reporting).
// Ctrl-C or SIGTERM stops every service cleanly.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-b'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

const { startStack, SERVICE_NAMES } = await import(join(root, 'libs/testing/dist/stack.js'));
const quiet = process.argv.includes('--quiet');
const pad = Math.max(...SERVICE_NAMES.map((s) => s.length));

// Service logs are JSON lines; show them compactly, one line each, prefixed by the service.
function show(service, line) {
  let text = line;
  try {
    const { time, level, msg, service: _s, instance: _i, ...rest } = JSON.parse(line);
    const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
    text = `${String(time).slice(11, 23)} ${level.padEnd(5)} ${msg}${extra}`;
    if (quiet && level === 'info' && !/ready|stopp|console SMS|console call/i.test(msg)) return;
  } catch {
    // not JSON: print as it is
  }
  process.stdout.write(`[${service.padEnd(pad)}] ${text}\n`);
}

const env = { NODE_ENV: process.env.NODE_ENV ?? 'development' };
// A first run has no identity provider: outside production the console offers its development
// sign-in until OIDC_ISSUER_URL is set (docs/operations.md, "Console").
if (env.NODE_ENV !== 'production' && !process.env.OIDC_ISSUER_URL && process.env.CONSOLE_DEV_LOGIN === undefined) env.CONSOLE_DEV_LOGIN = 'true';
// Without Twilio, calls go to the development voice provider: printed, and answered by `npm run demo`.
if (env.NODE_ENV !== 'production' && !process.env.TWILIO_ACCOUNT_SID && process.env.VOICE_PROVIDER === undefined) env.VOICE_PROVIDER = 'console';
let stack;
let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping all services…`);
  await stack?.stop();
  console.log('all services stopped');
  process.exit(0);
}
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));

try {
  // testDefaults false: the throttles and INSTANCE_NAME come from the environment or the services'
  // own defaults, not the tests' (which turn the throttles across users off).
  stack = await startStack({ env, services: SERVICE_NAMES, fixedPorts: true, testDefaults: false, onLine: show, readyTimeoutMs: 90_000 });
} catch (error) {
  console.error(`\ncould not start the stack: ${error.message}`);
  console.error('Are NATS (with JetStream), Redis and PostgreSQL running? See README.md, "Quick start".');
  process.exit(1);
}
if (stopping) process.exit(0);
console.log('\nOpen MFA is running. NATS API at', process.env.NATS_URL ?? 'nats://127.0.0.1:4222', '(subjects mfa.v1.*)');
for (const p of stack.processes) {
  console.log(`  ${p.name.padEnd(pad)}  ${p.url}   health ${p.url}/health   metrics ${p.url}/metrics`);
}
console.log(`\nConsole for operators: ${stack.url('console')}${env.CONSOLE_DEV_LOGIN === 'true' ? '   (development sign-in: any name, role platform-operator)' : ''}`);
console.log('Try it: npm run demo   (in another terminal). Stop: Ctrl-C.\n');
