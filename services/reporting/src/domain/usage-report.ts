import type { Keyring } from '@mfa/crypto';
import type { UsageItem, UsageQueryReply } from '@mfa/contracts';
import { keysetCursors } from './keyset-cursor.js';

export type Granularity = 'minute' | 'hour' | 'day' | 'month';

const FIXED_MS: Partial<Record<Granularity, number>> = { minute: 60_000, hour: 3_600_000 };

/** The first instant (UTC) of the minute, hour, day or month holding `at`. */
export function periodStart(at: Date, granularity: Granularity): Date {
  const fixed = FIXED_MS[granularity];
  if (fixed) return new Date(Math.floor(at.getTime() / fixed) * fixed);
  return granularity === 'day'
    ? new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate()))
    : new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
}

export function nextPeriod(start: Date, granularity: Granularity): Date {
  const fixed = FIXED_MS[granularity];
  if (fixed) return new Date(start.getTime() + fixed);
  return granularity === 'day'
    ? new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate() + 1))
    : new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
}

/** The periods of [from, to) after `after` (a period start), at most `limit` of them, oldest first. */
export function periodsOf(from: Date, to: Date, granularity: Granularity, after: Date | undefined, limit: number): Date[] {
  const periods: Date[] = [];
  for (let p = periodStart(from, granularity); p < to && periods.length < limit; p = nextPeriod(p, granularity)) {
    if (!after || p > after) periods.push(p);
  }
  return periods;
}

/** What the store counts, per period start (ms): sign-ins by method and result, registrations and erasures. */
export interface UsageCounts {
  signins: Array<{ period: number; method: string | null; success: number; failure: number }>;
  /** Users registered before the first period, and erased before it. */
  registeredBefore: number;
  erasedBefore: number;
  registrations: Map<number, number>;
  erasures: Map<number, number>;
}

/**
 * One page of the usage report. Enabled users of a period are those registered before its end and
 * not erased before its start: registered before the first period plus registered in each period
 * so far, less those erased before it.
 */
export function toUsagePage(
  periods: readonly Date[],
  counts: UsageCounts,
  hasMore: boolean,
  cursors: Pick<UsageCursors, 'encode'>,
  granularity: Granularity = 'day',
): UsageQueryReply {
  let registered = counts.registeredBefore;
  let erased = counts.erasedBefore;
  const items: UsageItem[] = periods.map((start) => {
    const key = start.getTime();
    registered += counts.registrations.get(key) ?? 0;
    const enabledUsers = registered - erased;
    erased += counts.erasures.get(key) ?? 0;
    const rows = counts.signins.filter((r) => r.period === key);
    const success = rows.reduce((n, r) => n + r.success, 0);
    const failure = rows.reduce((n, r) => n + r.failure, 0);
    return {
      period: granularity === 'minute' || granularity === 'hour' ? start.toISOString() : start.toISOString().slice(0, 10),
      authentications: { total: success + failure, success, failure },
      byMethod: rows
        .map((r) => ({ method: r.method ?? 'none', success: r.success, failure: r.failure }))
        .sort((a, b) => a.method.localeCompare(b.method)),
      enabledUsers,
    };
  });
  const reply: UsageQueryReply = { items };
  const last = periods.at(-1);
  if (hasMore && last) reply.nextCursor = cursors.encode(last);
  return reply;
}

/** Usage cursors: the last period returned, bound to tenant and granularity. */
export function usageCursors(keyring: Keyring, tenantId: string, granularity: Granularity) {
  const cursors = keysetCursors(keyring, tenantId, `reports.usage.${granularity}`, (id) => id === granularity);
  return {
    encode: (period: Date) => cursors.encode({ occurredAt: `${period.toISOString().slice(0, 19)}.000000Z`, id: granularity }),
    decode: (cursor: string) => new Date(cursors.decode(cursor).occurredAt.slice(0, 19) + 'Z'),
  };
}
export type UsageCursors = ReturnType<typeof usageCursors>;
