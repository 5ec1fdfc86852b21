import { Inject, Injectable } from '@nestjs/common';
import { Redis, ReplyError } from 'ioredis';
import { unavailable } from '@mfa/contracts';
import { RedisKeys } from '@mfa/projection';
import { REDIS } from '@mfa/service-kit';
import { histogram } from '@mfa/telemetry';
import type { StartVerdict, VerifyVerdict } from '../domain/verdicts.js';
import { START_SCRIPT, VERIFY_SCRIPT } from './scripts.js';
import { parseStartVerdict, parseVerifyVerdict } from './script-replies.js';

const redisDuration = histogram('mfa_redis_duration_seconds', 'Redis round trips of the challenge store, by operation', ['op']);

type ScriptFn = (...args: Array<string | number | Buffer>) => Promise<string[]>;

interface StartInput {
  tag: string;
  nonce: string;
  tenantId: string;
  userId: string;
  requestedMethod: string | undefined;
  enabledMethods: readonly string[];
  now: Date;
  expiresAt: Date;
  maxAttempts: number;
  codeHash: Buffer;
  ttlSeconds: number;
  smsMaxSends: number;
  smsWindowSeconds: number;
  tenantKnown: boolean;
  lockoutThreshold: number;
}

interface VerifyInput {
  tag: string;
  nonce: string;
  tenantId: string;
  now: Date;
  codeHash: Buffer;
  code: string;
  projectionKey: Buffer;
  lockoutThreshold: number;
  lockoutWindowSeconds: number;
  lockoutSeconds: number;
}

/**
 * A Redis that cannot be reached is `unavailable` to the caller (try again); an error Redis
 * answered with (a script bug) stays an internal error.
 */
async function reach<T>(op: string, call: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await call();
  } catch (error) {
    if (error instanceof ReplyError) throw error;
    throw unavailable('challenge store unavailable; try again', error);
  } finally {
    redisDuration.observe({ op }, (performance.now() - started) / 1000);
  }
}

/**
 * Challenges in Redis: one script call per start or verify, one HMGET per status. The scripts
 * answer flat string arrays; this adapter turns them into the domain's verdicts.
 */
@Injectable()
export class ChallengeStore {
  private readonly start: ScriptFn;
  private readonly verify: ScriptFn;

  constructor(@Inject(REDIS) private readonly redis: Redis) {
    redis.defineCommand('mfaChallengeStart', { numberOfKeys: 4, lua: START_SCRIPT });
    redis.defineCommand('mfaChallengeVerify', { numberOfKeys: 4, lua: VERIFY_SCRIPT });
    const r = redis as unknown as { mfaChallengeStart: ScriptFn; mfaChallengeVerify: ScriptFn };
    this.start = r.mfaChallengeStart.bind(redis);
    this.verify = r.mfaChallengeVerify.bind(redis);
  }

  async startChallenge(input: StartInput): Promise<StartVerdict> {
    const raw = await reach('start', () => this.start(
      RedisKeys.user(input.tag),
      RedisKeys.challenge(input.tag, input.nonce),
      RedisKeys.smsSends(input.tag),
      RedisKeys.failures(input.tag),
      input.tenantId,
      input.userId,
      input.requestedMethod ?? '',
      input.enabledMethods.join(','),
      input.now.getTime(),
      input.expiresAt.getTime(),
      input.maxAttempts,
      input.codeHash,
      input.ttlSeconds,
      input.smsMaxSends,
      input.smsWindowSeconds,
      input.tenantKnown ? '1' : '0',
      input.lockoutThreshold,
    ));
    return parseStartVerdict(raw);
  }

  async verifyChallenge(input: VerifyInput): Promise<VerifyVerdict> {
    const raw = await reach('verify', () => this.verify(
      RedisKeys.challenge(input.tag, input.nonce),
      RedisKeys.totp(input.tag),
      RedisKeys.totpSteps(input.tag),
      RedisKeys.failures(input.tag),
      input.tenantId,
      input.now.getTime(),
      input.codeHash,
      input.code,
      input.projectionKey,
      input.lockoutThreshold,
      input.lockoutWindowSeconds,
      input.lockoutSeconds,
    ));
    return parseVerifyVerdict(raw);
  }

  async readChallenge(
    tag: string,
    nonce: string,
  ): Promise<{ tenantId: string; status: string; reason: string; expiresAt: number } | undefined> {
    const [tenantId, status, reason, expiresAt] = await reach('status', () => this.redis.hmget(
      RedisKeys.challenge(tag, nonce),
      'tenantId',
      'status',
      'reason',
      'expiresAt',
    ));
    if (!tenantId || !status || !expiresAt) return undefined;
    return { tenantId, status, reason: reason ?? '', expiresAt: Number(expiresAt) };
  }
}
