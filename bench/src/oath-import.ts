// `node bench/dist/oath-import.js [--tokens 100000] [--assigned 10000] [--format csv|pskc]` (after
// `npm run build`): the rate of a hardware token import (issue 13). It starts a nats-server and a
// redis-server of its own, user-settings against them, registers `assigned` users through
// `users.register`, writes a CSV of `tokens` tokens in the seeds' format (the first `assigned` rows
// name a user each, the rest wait unassigned) or a PSKC file of them (no user: PSKC names none),
// every secret encrypted with a pre-shared AES-128 key and MACed (RFC 6030 §6.1), puts it into
// MFA_IMPORTS as an administrator would a large file, starts the job with `oath.import` and follows
// `oath.import.status` to the end, printing the rate as it goes.
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Objm } from '@nats-io/obj';
import { IMPORTS_BUCKET, OATH_CSV_HEADER, Subjects } from '@mfa/contracts';
import { base32Encode } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { startNatsServer, startRedisServer, startStack } from '@mfa/testing';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '100000' }, assigned: { type: 'string', default: '10000' }, format: { type: 'string', default: 'csv' } },
});
const tokens = Number(values.tokens);
const format = values.format === 'pskc' ? 'pskc' : 'csv';
const assigned = format === 'pskc' ? 0 : Math.min(Number(values.assigned), tokens);
const psk = randomBytes(16);

/** A PSKC file of `count` TOTP keys, encrypted with `psk` (AES-128-CBC) and MACed with HMAC-SHA1. */
function pskcFile(count: number): Buffer {
  const macKey = randomBytes(20);
  const encrypt = (plain: Buffer) => {
    const iv = randomBytes(16);
    const cipher = createCipheriv('aes-128-cbc', psk, iv);
    return Buffer.concat([iv, cipher.update(plain), cipher.final()]);
  };
  const aes = 'http://www.w3.org/2001/04/xmlenc#aes128-cbc';
  const parts = [
    `<?xml version="1.0" encoding="UTF-8"?>\n<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">`,
    `<EncryptionKey><ds:KeyName>transport</ds:KeyName></EncryptionKey><MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"><MACKey><xenc:EncryptionMethod Algorithm="${aes}"/><xenc:CipherData><xenc:CipherValue>${encrypt(macKey).toString('base64')}</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>`,
  ];
  for (let i = 0; i < count; i++) {
    const value = encrypt(randomBytes(20));
    parts.push(
      `<KeyPackage><DeviceInfo><Manufacturer>Contoso</Manufacturer><SerialNo>SN${String(i).padStart(7, '0')}</SerialNo><Model>HardwareKey</Model></DeviceInfo>` +
        `<Key Id="k${i}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp"><AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>` +
        `<Data><Secret><EncryptedValue><xenc:EncryptionMethod Algorithm="${aes}"/><xenc:CipherData><xenc:CipherValue>${value.toString('base64')}</xenc:CipherValue></xenc:CipherData></EncryptedValue>` +
        `<ValueMAC>${createHmac('sha1', macKey).update(value).digest('base64')}</ValueMAC></Secret><TimeInterval><PlainValue>${i % 2 ? 30 : 60}</PlainValue></TimeInterval></Data></Key></KeyPackage>`,
    );
  }
  parts.push('</KeyContainer>\n');
  return Buffer.from(parts.join('\n'), 'utf8');
}
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

  let file: Buffer;
  if (format === 'csv') {
    const lines = [OATH_CSV_HEADER];
    for (let i = 0; i < tokens; i++) lines.push(`${users[i] ?? ''},SN${String(i).padStart(7, '0')},${base32Encode(randomBytes(20))},${i % 2 ? 30 : 60},Contoso,HardwareKey`);
    file = Buffer.from(lines.join('\r\n'), 'utf8');
  } else {
    file = pskcFile(tokens);
  }
  const object = `${tenantId}/bench.${format}`;
  await (await new Objm(nc).open(IMPORTS_BUCKET)).putBlob({ name: object }, file);
  out(`file: ${format}, ${tokens} tokens (${assigned} assigned to users), ${(file.length / 1e6).toFixed(1)} MB, put into ${IMPORTS_BUCKET}`);

  const started = Date.now();
  const { jobId } = await ask<{ jobId: string }>(Subjects.oathImport, { tenantId, format, object, ...(format === 'pskc' ? { psk: psk.toString('hex') } : {}) });
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
