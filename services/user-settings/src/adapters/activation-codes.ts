import { createHmac } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';
import { ACTIVATION_CODE_SECONDS } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import { RedisKeys } from '@mfa/projection';

/** Crockford's base32 without I, L, O, U: nothing to misread when typed from a screen. */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** The code as compared: upper case, without the dashes and spaces people type. */
export const normalizedCode = (code: string): string => code.toUpperCase().replace(/[\s-]/g, '');

/** A code taken by an activation: whose it was, and when it would have expired. */
export interface TakenCode {
  tenantId: string;
  userId: string;
  /** The code, normalised (no dashes, upper case). */
  code: string;
  /** Its end (Unix ms): a code given back lives no longer than it would have. */
  expiresAtMs: number;
  /** When it was issued (Unix ms): a code issued before the user's reset or registration activates nothing. */
  issuedAtMs: number;
}

interface StoredCode {
  tenantId: string;
  userId: string;
  /** Absent in codes of an earlier version: then their end less their lifetime. */
  issuedAtMs?: number;
}

/**
 * One-time activation codes of push enrolment, in Redis for ACTIVATION_CODE_SECONDS: only a keyed
 * hash of the code names the key (a Redis dump holds no usable code), and taking it is one GETDEL
 * so a code activates one device at most, whichever instance is asked.
 */
export class ActivationCodes {
  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
  ) {}

  /**
   * A new code for the user (16 characters, 80 bits from the CSPRNG), shown grouped: K7QX-M2PA-9VZD-4HTE.
   * The user's slot (`tag`) learns that a code may be good until then (see `outstanding`).
   */
  async issue(tenantId: string, userId: string, tag: string, now: Date, random: (bytes: number) => Buffer): Promise<{ code: string; expiresAt: Date }> {
    const bytes = random(16);
    const code = [...bytes].map((b) => ALPHABET[b % 32]).join('');
    const issuedAtMs = now.getTime();
    const expiresAt = new Date(issuedAtMs + ACTIVATION_CODE_SECONDS * 1000);
    await this.redis.set(RedisKeys.activationIssued(tag), String(issuedAtMs), 'EX', ACTIVATION_CODE_SECONDS);
    await this.redis.set(this.key(code), JSON.stringify({ tenantId, userId, issuedAtMs } satisfies StoredCode), 'EX', ACTIVATION_CODE_SECONDS);
    return { code: code.match(/.{4}/g)!.join('-'), expiresAt };
  }

  /** Whether a code issued to the user in the last ACTIVATION_CODE_SECONDS may still activate. */
  async outstanding(tag: string): Promise<boolean> {
    return (await this.redis.exists(RedisKeys.activationIssued(tag))) === 1;
  }

  /**
   * The enrolment of a code, taken (it will not activate again); undefined for an unknown or
   * expired one.
   */
  async take(code: string): Promise<TakenCode | undefined> {
    const normalized = normalizedCode(code);
    if (!/^[0-9A-Z]{16}$/.test(normalized)) return undefined;
    const key = this.key(normalized);
    // One key, one transaction: the life left and the value, read as the code is taken.
    const results = await this.redis.multi().pttl(key).getdel(key).exec();
    if (!results) return undefined;
    const [[ttlError, ttl], [getError, found]] = results as [[Error | null, number], [Error | null, string | null]];
    if (ttlError || getError) throw ttlError ?? getError;
    if (!found) return undefined;
    const { tenantId, userId, issuedAtMs } = JSON.parse(found) as StoredCode;
    const expiresAtMs = Date.now() + Math.max(0, ttl);
    return { tenantId, userId, code: normalized, expiresAtMs, issuedAtMs: issuedAtMs ?? expiresAtMs - ACTIVATION_CODE_SECONDS * 1000 };
  }

  /**
   * A taken code whose device was refused before anything was recorded (the user has five apps
   * already) is good again until it would have expired: the refusal does not burn it. Never over
   * a code that exists again, never past its end.
   */
  async giveBack(taken: TakenCode): Promise<void> {
    const remainingMs = taken.expiresAtMs - Date.now();
    if (remainingMs <= 0) return;
    const stored: StoredCode = { tenantId: taken.tenantId, userId: taken.userId, issuedAtMs: taken.issuedAtMs };
    await this.redis.set(this.key(taken.code), JSON.stringify(stored), 'PX', remainingMs, 'NX');
  }

  private key(normalized: string): string {
    // The code-hash key, bound to this purpose: never the same hash as an SMS code's.
    return RedisKeys.activation(createHmac('sha256', this.keyring.codeHashKey).update(`push-activation\u0000${normalized}`).digest('base64url'));
  }
}
