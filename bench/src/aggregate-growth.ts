// `node bench/dist/aggregate-growth.js [--sizes 10,100,1000,10000]` against a running user-settings
// (any build: npm start, or one service started by hand). Grows one user (profile changes) and
// one tenant (settings changes) to each size and times 20 further commands at that size: the
// security review's 6g, "aggregates that grow without bound keep register/configure latency flat".
import { parseArgs } from 'node:util';
import { Subjects } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { fmt, Samples } from './stats.js';

const { values } = parseArgs({ options: { sizes: { type: 'string', default: '10,100,1000,10000' } } });
const sizes = values.sizes!.split(',').map(Number);
const nc = await connectClient({ name: 'bench-aggregates' });
const platformKey = process.env.MFA_PLATFORM_API_KEY;
const headers = platformKey ? { Authorization: `Bearer ${platformKey}` } : undefined;
const ask = async (subject: string, body: unknown) => {
  const reply = await requestJson<{ error?: { message: string } }>(nc, subject, body, { timeoutMs: 60_000, ...(headers ? { headers } : {}) });
  if (reply.error) throw new Error(`${subject}: ${reply.error.message}`);
};
const tenantId = `growth-${Date.now().toString(36)}`;
const userId = 'grows@contoso.example';
await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
let userEvents = 0;
let tenantEvents = 1;
const registerNext = () => ask(Subjects.usersRegister, { tenantId, userId, displayName: `Name ${userEvents++}` });
const configureNext = () => ask(Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: 60 + (tenantEvents++ % 500) } });

process.stdout.write('events   users.register p50 / p99 ms   tenants.configure p50 / p99 ms\n');
for (const size of sizes) {
  while (userEvents < size) await registerNext();
  while (tenantEvents < size) await configureNext();
  const register = new Samples();
  const configure = new Samples();
  for (let i = 0; i < 20; i++) {
    let t = performance.now();
    await registerNext();
    register.add(performance.now() - t);
    t = performance.now();
    await configureNext();
    configure.add(performance.now() - t);
  }
  process.stdout.write(
    `${String(size).padStart(6)}   ${fmt(register.percentile(50)).padStart(8)} / ${fmt(register.percentile(99)).padEnd(8)}            ${fmt(configure.percentile(50)).padStart(8)} / ${fmt(configure.percentile(99))}\n`,
  );
}
await nc.drain();
