import type { RedisClient } from '@mfa/projection';
import { RedisKeys } from '@mfa/projection';

export interface ReceiptRoute {
  tenantId: string;
  challengeId: string;
}

/**
 * What a provider's message id names: the challenge of its SMS (and when the route was written,
 * ms, absent in routes written before it was recorded), or `ambiguous`: the provider gave the id
 * to SMS of two challenges within the routes' lifetime, and a receipt naming it may be of either.
 */
export type RouteLookup = { kind: 'route'; route: ReceiptRoute; sentAt: number | undefined } | { kind: 'ambiguous' };

/** How long a receipt may come after its SMS and still be recorded (SMSCs keep trying for hours). */
export const RECEIPT_ROUTE_TTL_MS = 24 * 3600_000;

/** What a key holding SMS of more than one challenge holds instead of a route. */
const AMBIGUOUS = JSON.stringify({ a: 1 });

/**
 * One key, so one slot. Writes the route unless the key holds one of another challenge (or is
 * already ambiguous): then the key becomes ambiguous, for the routes' lifetime from this SMS, and
 * what it held is returned. A route of the same challenge (a resend under the same id) is
 * replaced; what is not JSON is overwritten. ARGV: route, challenge id, ambiguous marker, ttl ms.
 */
const REMEMBER = `
local held = redis.call('GET', KEYS[1])
if held then
  local ok, prev = pcall(cjson.decode, held)
  if ok and type(prev) == 'table' and (prev.a or prev.c ~= ARGV[2]) then
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
    return held
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return false
`;

/**
 * Which challenge each SMS belongs to, by the provider's message id, for providers whose receipts
 * name nothing else (SMPP's deliver_sm). One key per message (`mfa:{sms:<provider>:<id>}:route`),
 * written once the provider accepted the message; any dispatch instance may get the receipt, on
 * its own session, so the record is in Redis, not in memory.
 *
 * SMSCs reuse message ids (short counters, a counter reset when the SMSC restarts, ids unique per
 * node only). An id given again while the route of another challenge still holds it cannot say
 * whose receipt names it: the key is marked ambiguous rather than overwritten (which would give
 * the earlier SMS's late receipt, possibly of another tenant, to the new challenge).
 */
export class ReceiptRoutes {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaSmsReceiptRoute', { numberOfKeys: 1, lua: REMEMBER });
  }

  /**
   * Records the route; when the id already named an SMS of another challenge, the key becomes
   * ambiguous and the answer says what it held (`ambiguous` when it already was).
   */
  async remember(
    provider: string,
    messageId: string,
    route: ReceiptRoute,
    now = Date.now(),
    ttlMs = RECEIPT_ROUTE_TTL_MS,
  ): Promise<{ reused: false } | { reused: true; held: RouteLookup | undefined }> {
    const held = await (this.redis as unknown as { mfaSmsReceiptRoute: (...a: Array<string | number>) => Promise<string | null> }).mfaSmsReceiptRoute(
      RedisKeys.smsReceiptRoute(provider, messageId),
      JSON.stringify({ t: route.tenantId, c: route.challengeId, s: now }),
      route.challengeId,
      AMBIGUOUS,
      ttlMs,
    );
    return held === null ? { reused: false } : { reused: true, held: lookupOf(held) };
  }

  async find(provider: string, messageId: string): Promise<RouteLookup | undefined> {
    const text = await this.redis.get(RedisKeys.smsReceiptRoute(provider, messageId));
    return text ? lookupOf(text) : undefined;
  }
}

function lookupOf(text: string): RouteLookup | undefined {
  try {
    const { t, c, s, a } = JSON.parse(text) as { t?: unknown; c?: unknown; s?: unknown; a?: unknown };
    if (a) return { kind: 'ambiguous' };
    if (typeof t !== 'string' || typeof c !== 'string') return undefined;
    return { kind: 'route', route: { tenantId: t, challengeId: c }, sentAt: typeof s === 'number' ? s : undefined };
  } catch {
    return undefined;
  }
}
