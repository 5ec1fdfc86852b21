import type { EventVersion } from '@mfa/contracts';
import { dataKeyGeneration, SealError } from '@mfa/crypto';
import { PoisonMessageError } from '@mfa/messaging';
import { openPersonalData, type UserDataKeys } from '@mfa/service-kit';

/** The phone number's data key is not in MFA_USER_KEYS (yet): the request is tried again later. */
export class DataKeyUnavailableError extends Error {
  override name = 'DataKeyUnavailableError';
}

/**
 * The number to text or call for a v2 challenge: the phone in its personal data, sealed under the
 * user's data key; 'erased' once the user is erased (nothing to send to, nothing to retry).
 */
export async function phoneOfChallenge(keys: Pick<UserDataKeys, 'get'>, event: EventVersion<'ChallengeStarted', 2>): Promise<string | 'erased'> {
  const recipient = await recipientOfChallenge(keys, event);
  return recipient === 'erased' ? 'erased' : recipient.phone;
}

/** The phone of a v2 challenge and its extension, if the user's phone has one (a call dials it). */
export async function recipientOfChallenge(keys: Pick<UserDataKeys, 'get'>, event: EventVersion<'ChallengeStarted', 2>): Promise<{ phone: string; extension?: string | undefined } | 'erased'> {
  const { tenantId } = event;
  const { userId, pii } = event.data;
  const gen = pii === undefined ? undefined : dataKeyGeneration(pii);
  if (pii === undefined || gen === undefined) throw new PoisonMessageError(`${event.data.method} request without a phone number`);
  const key = await keys.get(tenantId, userId, gen);
  if (key === 'erased') return 'erased';
  // Not visible yet, or the key store is behind: retried with back-off, then dead-lettered.
  if (!key) throw new DataKeyUnavailableError(`no data key of generation ${gen} for the user of this ${event.data.method} request`);
  let personal: ReturnType<typeof openPersonalData>;
  try {
    personal = openPersonalData(key, { tenantId, userId, purpose: 'challenge' }, pii);
  } catch (cause) {
    if (cause instanceof SealError) throw new PoisonMessageError('the sealed personal data does not open', { cause });
    throw cause;
  }
  if (!personal.phoneNumber) throw new PoisonMessageError(`${event.data.method} request without a phone number`);
  return { phone: personal.phoneNumber, extension: personal.phoneExtension };
}
