import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ChallengeStartReply } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import type { RedisClient } from '@mfa/projection';
import { createRedis } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { itWith, startRedisServer, type RedisServerProcess } from '@mfa/testing';
import type { ApiResult, ChallengeApi } from './adapters/challenge-api.js';
import { SeenRequests } from './adapters/seen-requests.js';
import { StateStore } from './adapters/state-store.js';
import { DuplicateCache } from './application/duplicate-cache.js';
import { drops } from './application/metrics.js';
import { RadiusService } from './application/radius.service.js';
import { loadRadiusConfig, redisOf } from './config.js';
import { ClientDirectory, RadiusClients } from './domain/clients.js';
import { Attr, Code, decodePacket, encodeRequest, textAttributes } from './domain/packet.js';

const SECRET = 'a-shared-secret-of-the-vpn';
const clients = new ClientDirectory(RadiusClients.parse(JSON.stringify([{ cidr: '192.0.2.0/24', secret: SECRET, tenantId: 'tenant-a', name: 'vpn' }])), 'challenge');
const lines: string[] = [];
const log: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: (message) => void lines.push(message), child: () => log };

/** The challenge API: every start is a pending TOTP challenge (Redis is what this test is about). */
const api = {
  longestCallMs: 6_000,
  replyGraceMs: 1_000,
  start: async (): Promise<ApiResult<ChallengeStartReply>> => ({ ok: { challengeId: `ch-${randomBytes(4).toString('hex')}`, status: 'pending', method: 'totp', expiresAt: new Date(Date.now() + 60_000).toISOString() } as ChallengeStartReply }),
} as unknown as ChallengeApi;

const request = (user: string) => encodeRequest({ code: Code.AccessRequest, identifier: 1, authenticator: randomBytes(16), attributes: textAttributes(Attr.UserName, user), secret: Buffer.from(SECRET) });
const internalDrops = async () => (await drops.get()).values.find((v) => v.labels.reason === 'internal')?.value ?? 0;

// Its own redis-server: the test freezes it (SIGSTOP), as a hung server or a partition would.
describe('RadiusService on a Redis that stops answering', () => {
  let server: RedisServerProcess;
  let redis: RedisClient;
  let cache: DuplicateCache;
  let service: RadiusService;

  before(async () => {
    server = await startRedisServer();
    // The connection as the service makes it (RedisModule with redisOf).
    redis = createRedis({ ...redisOf(loadRadiusConfig({ REDIS_URL: server.url })), log });
    cache = new DuplicateCache();
    const { keyring } = loadKeyring({ NODE_ENV: 'test' });
    service = new RadiusService(clients, api, new StateStore(redis, keyring), cache, { waitMs: 5_000, pollMs: 500 }, log, new SeenRequests(redis, 600_000));
  });

  after(async () => {
    cache?.close();
    redis?.disconnect();
    if (server) process.kill(server.pid, 'SIGCONT');
    await server?.stop();
  });

  itWith({ real: ['redis'] }, 'answers nothing within the command timeout (counted as internal, logged) instead of holding the request forever; answered again once Redis is', async () => {
    const answered = await service.receive({ bytes: request('alice@example.com'), address: '192.0.2.10', port: 40_000 });
    assert.equal(decodePacket(answered!).code, Code.AccessChallenge, 'Redis up: a challenge');

    process.kill(server.pid, 'SIGSTOP');
    try {
      const before = await internalDrops();
      const frozen = service.receive({ bytes: request('bob@example.com'), address: '192.0.2.10', port: 40_001 })!;
      const outcome = await Promise.race([frozen.then((a) => ({ answer: a })), new Promise((resolve) => setTimeout(() => resolve('still waiting after 15 s'), 15_000).unref())]);
      assert.deepEqual(outcome, { answer: undefined }, 'no answer: the NAS tries its next server');
      assert.equal(await internalDrops(), before + 1);
      assert.ok(lines.includes('radius request failed'));
    } finally {
      process.kill(server.pid, 'SIGCONT');
    }

    const again = await service.receive({ bytes: request('carol@example.com'), address: '192.0.2.10', port: 40_002 });
    assert.equal(decodePacket(again!).code, Code.AccessChallenge, 'Redis back: a challenge');
  });
});
