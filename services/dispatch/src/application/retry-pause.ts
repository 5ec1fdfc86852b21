import { setTimeout as sleep } from 'node:timers/promises';
import { WORKING_EVERY_MS, type Delivery } from '@mfa/messaging';

/** The service is stopping: the message goes back to JetStream for another instance. */
export class DeliveryInterruptedError extends Error {
  override name = 'DeliveryInterruptedError';
}

/**
 * The back-off before a provider is tried again, telling JetStream all along that the message is
 * still being worked on; a service that stops ends the wait (DeliveryInterruptedError).
 */
export async function pauseWorking(ms: number, msg: Delivery['msg'], signal: AbortSignal | undefined, what: string): Promise<void> {
  for (let left = ms; left > 0; left -= WORKING_EVERY_MS) {
    try {
      await sleep(Math.min(left, WORKING_EVERY_MS), undefined, signal ? { signal } : undefined);
    } catch (cause) {
      throw new DeliveryInterruptedError(`stopping while waiting to retry ${what}`, { cause });
    }
    msg.working();
  }
}
