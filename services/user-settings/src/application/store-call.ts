import { ContractError, unavailable, UnknownEventError } from '@mfa/contracts';
import { SealError } from '@mfa/crypto';
import { ConcurrencyError } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';

/** Appends lost to a concurrent writer are decided again on fresh state this many times. */
export const MAX_APPEND_ATTEMPTS = 5;

/**
 * A call to the event store (or Redis beside it): infrastructure failures answer `unavailable`
 * (logged); conflicts, contract errors, unreadable events and seals pass through as they are.
 */
export async function storeCall<T>(log: Logger, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ConcurrencyError || error instanceof UnknownEventError || error instanceof ContractError || error instanceof SealError) throw error;
    log.warn('event store call failed', { error });
    throw unavailable('event store unavailable', error);
  }
}
