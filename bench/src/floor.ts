// The floor: the same hops as one challenge request, with nothing else. One NATS request/reply,
// one Redis script, one JetStream publish awaited for its ack; no framework, no validation, no
// crypto, no tracing. Our figures are printed as a ratio of this one.
import { jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { Redis } from 'ioredis';
import { connectClient } from '@mfa/messaging';
import { coalesceWrites } from '@mfa/service-kit/redis-writes';

const START = `redis.call('HSET', KEYS[1], 'code', ARGV[1], 'status', 'pending') redis.call('EXPIRE', KEYS[1], 600) return 'pending'`;
const VERIFY = `local c = redis.call('HGET', KEYS[1], 'code') if c == ARGV[1] then redis.call('HSET', KEYS[1], 'status', 'approved') return 'approved' end return 'pending'`;

const nc = await connectClient({ name: 'bench-floor', noAsyncTraces: true });
const jsm = await jetstreamManager(nc);
await jsm.streams.add({ name: 'BENCH_FLOOR', subjects: ['bench.floor.evt.>'], storage: StorageType.File, retention: RetentionPolicy.Limits, max_age: 3600 * 1e9, num_replicas: Number(process.env.STREAM_REPLICAS ?? 1) }).catch(async () => {
  await jsm.streams.purge('BENCH_FLOOR');
});
const js = jetstream(nc);
// Written as the services write: the commands of one turn in one write (coalesceWrites).
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
coalesceWrites(redis);
redis.defineCommand('floorStart', { numberOfKeys: 1, lua: START });
redis.defineCommand('floorVerify', { numberOfKeys: 1, lua: VERIFY });
const r = redis as unknown as { floorStart(k: string, c: string): Promise<string>; floorVerify(k: string, c: string): Promise<string> };

for (const [subject, run] of [
  ['bench.floor.start', (b: { id: string; code: string }) => r.floorStart(`floor:{${b.id}}`, b.code)],
  ['bench.floor.verify', (b: { id: string; code: string }) => r.floorVerify(`floor:{${b.id}}`, b.code)],
] as const) {
  nc.subscribe(subject, {
    queue: 'floor',
    callback: (_err, msg) => {
      const body = msg.json<{ id: string; code: string }>();
      void run(body)
        .then(async (status) => {
          await js.publish(`bench.floor.evt.${subject.endsWith('start') ? 'started' : 'verified'}`, msg.data);
          msg.respond(JSON.stringify({ id: body.id, status }));
        })
        .catch((error: Error) => msg.respond(JSON.stringify({ error: { code: 'internal', message: error.message } })));
    },
  });
}
process.stdout.write('floor ready\n');
process.on('SIGTERM', () => {
  void nc.drain().then(() => redis.quit()).then(() => process.exit(0));
});
