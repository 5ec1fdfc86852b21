import type { RedisClient } from '@mfa/projection';
import { RedisKeys } from '@mfa/projection';

export interface ReceiptRoute {
  tenantId: string;
  challengeId: string;
}

/** How long a receipt may come after its SMS and still be recorded (SMSCs keep trying for hours). */
export const RECEIPT_ROUTE_TTL_MS = 24 * 3600_000;

/**
 * Which challenge each SMS belongs to, by the provider's message id, for providers whose receipts
 * name nothing else (SMPP's deliver_sm). One key per message (`mfa:{sms:<provider>:<id>}:route`),
 * written once the provider accepted the message; any dispatch instance may get the receipt, on
 * its own session, so the record is in Redis, not in memory.
 */
export class ReceiptRoutes {
  constructor(private readonly redis: RedisClient) {}

  async remember(provider: string, messageId: string, route: ReceiptRoute, ttlMs = RECEIPT_ROUTE_TTL_MS): Promise<void> {
    await this.redis.set(RedisKeys.smsReceiptRoute(provider, messageId), JSON.stringify({ t: route.tenantId, c: route.challengeId }), 'PX', ttlMs);
  }

  async find(provider: string, messageId: string): Promise<ReceiptRoute | undefined> {
    const text = await this.redis.get(RedisKeys.smsReceiptRoute(provider, messageId));
    if (!text) return undefined;
    try {
      const { t, c } = JSON.parse(text) as { t?: unknown; c?: unknown };
      return typeof t === 'string' && typeof c === 'string' ? { tenantId: t, challengeId: c } : undefined;
    } catch {
      return undefined;
    }
  }
}
