// `node bench/dist/rebuild.js [--users 100000] [--instances 1]` (after `npm run build`): how fast
// a Redis that came back empty is refilled from the event log, and what a projected user costs in
// Redis. It starts a nats-server and a redis-server of its own (nothing of it lands in the shared
// ones), user-settings against them, registers the users through `users.register` (phone and
// display name, as an IdP would), measures Redis memory per user, then FLUSHALLs Redis and times
// the live rebuild until the projection is complete again (issue 7).
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Subjects } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { startNatsServer, startRedisServer, startStack } from '@mfa/testing';

const { values } = parseArgs({ options: { users: { type: 'string', default: '100000' }, instances: { type: 'string', default: '1' } } });
const users = Number(values.users);
const instances = Number(values.instances);
const out = (line: string) => process.stdout.write(`${line}\n`);

const nats = await startNatsServer();
const redisServer = await startRedisServer();
const redis = new Redis(redisServer.url);
const stack = await startStack({
  services: ['user-settings', 'auth-challenge'],
  instances,
  env: { NODE_ENV: 'test', MFA_AUTH: 'off', NATS_URL: nats.url, REDIS_URL: redisServer.url, LOG_LEVEL: 'warn' },
  onLine: (service, line) => {
    if (/"level":"error"/.test(line) || /user projection rebuilt/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
  },
});
const nc = await connectClient({ servers: nats.url, name: 'bench-rebuild' });
const ask = async (subject: string, body: unknown) => {
  const reply = await requestJson<{ error?: { message: string } }>(nc, subject, body, { timeoutMs: 30_000 });
  if (reply.error) throw new Error(`${subject}: ${reply.error.message}`);
};
const usedMemory = async () => Number(/^used_memory:(\d+)/m.exec(await redis.info('memory'))?.[1]);
const complete = async () => (await redis.exists(RedisKeys.userProjectionMarker)) === 1;

try {
  const tenantId = `rebuild-${Date.now().toString(36)}`;
  await ask(Subjects.tenantsConfigure, { tenantId, settings: {} });
  while (!(await complete())) await new Promise((r) => setTimeout(r, 50));
  const memoryBefore = await usedMemory();

  out(`registering ${users} users through users.register …`);
  let next = 0;
  const registerStarted = performance.now();
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < users) {
        const i = next++;
        await ask(Subjects.usersRegister, { tenantId, userId: `user-${i}@rebuild.example`, displayName: `User ${i}`, phoneNumber: `+1555${String(i).padStart(7, '0')}` });
      }
    }),
  );
  const registerSeconds = (performance.now() - registerStarted) / 1000;
  const bytesPerUser = ((await usedMemory()) - memoryBefore) / users;
  out(`registered in ${registerSeconds.toFixed(1)} s (${Math.round(users / registerSeconds)} users/s); Redis memory ${Math.round(bytesPerUser)} bytes per projected user`);

  await redis.flushall();
  const lost = performance.now();
  // A user the bulk rebuild reaches last signs in meanwhile, retrying every 200 ms as an IdP
  // would after `unavailable`: auth-challenge's signal gets them projected ahead of the rest.
  const signIn = (async () => {
    for (;;) {
      const reply = await requestJson<{ status?: string; error?: { code: string } }>(
        nc,
        Subjects.challengeStart,
        { tenantId, userId: `user-${users - 1}@rebuild.example`, method: 'sms' },
        { timeoutMs: 30_000 },
      );
      if (reply.status === 'pending') return (performance.now() - lost) / 1000;
      if (reply.error?.code !== 'unavailable') throw new Error(`start during the rebuild: ${JSON.stringify(reply)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  while (!(await complete())) await new Promise((r) => setTimeout(r, 20));
  const seconds = (performance.now() - lost) / 1000;
  out(`a user signing in during the rebuild was served again after ${(await signIn).toFixed(1)} s`);
  const keys = await redis.dbsize();
  out(`rebuild after FLUSHALL: ${users} users in ${seconds.toFixed(1)} s (${Math.round(users / seconds)} users/s, ${instances} user-settings instance(s)); ${keys} keys after`);
} finally {
  await nc.drain();
  redis.disconnect();
  await stack.stop();
  await redisServer.stop();
  await nats.stop();
}
