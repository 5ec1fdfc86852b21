// `node bench/dist/oath-import.js [--tokens 100000] [--assigned 10000]` (after `npm run build`):
// the rate of a hardware token import (issue 13). It starts a nats-server and a redis-server of its
// own, user-settings against them, registers `assigned` users through `users.register`, writes a CSV
// of `tokens` tokens in the seeds' format (the first `assigned` rows name a user each, the rest wait
// unassigned), puts it into MFA_IMPORTS as an administrator would a large file, starts the job with
// `oath.import` and follows `oath.import.status` to the end, printing the rate as it goes.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Objm } from '@nats-io/obj';
import { IMPORTS_BUCKET, OATH_CSV_HEADER, Subjects } from '@mfa/contracts';
import { base32Encode } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { startNatsServer, startRedisServer, startStack } from '@mfa/testing';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '100000' }, assigned: { type: 'string', default: '10000' } } });
const tokens = Number(values.tokens);
const assigned = Math.min(Number(values.assigned), tokens);
const out = (line: string) => process.stdout.write(`${line}\n`);

const nats = await startNatsServer();
const redisServer = await startRedisServer();
const stack = await startStack({
  services: ['user-settings'],
  env: { NODE_ENV: 'test', MFA_AUTH: 'off', NATS_URL: nats.url, REDIS_URL: redisServer.url, LOG_LEVEL: 'warn' },
  onLine: (service, line) => {
    if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
  },
});
const nc = await connectClient({ servers: nats.url, name: 'bench-oath-import' });
const ask = async <T>(subject: string, body: unknown): Promise<T> => {
  const reply = await requestJson<T & { error?: { message: string } }>(nc, subject, body, { timeoutMs: 30_000 });
  if (reply.error) throw new Error(`${subject}: ${reply.error.message}`);
  return reply;
};

try {
  const tenantId = `import-${Date.now().toString(36)}`;
  await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
  const users = Array.from({ length: assigned }, (_, i) => `user${i}@${tenantId}.example`);
  const registering = Date.now();
  for (let i = 0; i < users.length; i += 64) await Promise.all(users.slice(i, i + 64).map((userId) => ask(Subjects.usersRegister, { tenantId, userId })));
  out(`registered ${assigned} users in ${((Date.now() - registering) / 1000).toFixed(1)} s`);

  const lines = [OATH_CSV_HEADER];
  for (let i = 0; i < tokens; i++) lines.push(`${users[i] ?? ''},SN${String(i).padStart(7, '0')},${base32Encode(randomBytes(20))},${i % 2 ? 30 : 60},Contoso,HardwareKey`);
  const file = Buffer.from(lines.join('\r\n'), 'utf8');
  const object = `${tenantId}/bench.csv`;
  await (await new Objm(nc).open(IMPORTS_BUCKET)).putBlob({ name: object }, file);
  out(`file: ${tokens} tokens (${assigned} assigned to users), ${(file.length / 1e6).toFixed(1)} MB, put into ${IMPORTS_BUCKET}`);

  const started = Date.now();
  const { jobId } = await ask<{ jobId: string }>(Subjects.oathImport, { tenantId, format: 'csv', object });
  let last = '';
  for (;;) {
    const s = await ask<{ state: string; total: number; processed: number; imported: number; failed: number; error?: string }>(Subjects.oathImportStatus, { tenantId, jobId });
    const seconds = (Date.now() - started) / 1000;
    const line = `${seconds.toFixed(0).padStart(4)} s  ${s.state.padEnd(9)} ${s.processed}/${s.total}  imported ${s.imported}  failed ${s.failed}  ${(s.processed / seconds).toFixed(0)} tokens/s`;
    if (line !== last && Math.floor(seconds) % 10 === 0) out(line);
    last = line;
    if (s.state === 'completed' || s.state === 'failed') {
      out(line);
      out(`${s.state}: ${s.imported} imported, ${s.failed} failed in ${seconds.toFixed(1)} s = ${(s.processed / seconds).toFixed(0)} tokens/s${s.error ? ` (${s.error})` : ''}`);
      break;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
} finally {
  await nc.drain();
  await stack.stop();
  await redisServer.stop();
  await nats.stop();
}
