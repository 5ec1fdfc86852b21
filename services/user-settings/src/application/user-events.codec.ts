import type { AnyEvent, EventOf, EventVersion, PersonalData } from '@mfa/contracts';
import { dataKeyGeneration } from '@mfa/crypto';
import { createEvent } from '@mfa/messaging';
import { DataKeyStoreError, openPersonalData, personalDataOf, sealPersonalData, type UserDataKeys } from '@mfa/service-kit';
import type { TenantEvent } from '../domain/tenant.js';
import type { UserEvent } from '../domain/user.js';

/** The aggregate a batch of events belongs to. */
export interface AggregateRef {
  subject: string;
  tenantId: string;
  aggregateId: string;
}

/** The last erasure among a user's stored events, if any. */
export function lastErasure(events: readonly AnyEvent[]): EventOf<'UserErased'> | undefined {
  return events.findLast((e): e is EventOf<'UserErased'> => e.type === 'UserErased');
}

/**
 * A user event after the last erasure is sealed under a data key that MFA_USER_KEYS does not hold:
 * `erased` (a tombstone of that generation or later, or a later key) or `missing` (read from the
 * stream leader). Once the log, read again after this, still names that generation, the two
 * disagree for good: a restore took them from different moments (UserSettingsService tells that
 * from an erasure or registration racing the load).
 */
export class UserDataKeyGoneError extends DataKeyStoreError {
  override name = 'UserDataKeyGoneError';
  constructor(
    readonly gen: number,
    readonly state: 'erased' | 'missing',
  ) {
    super(`the data key (generation ${gen}) of a user event is ${state}`);
  }
}

/** The data-key generations that the personal data of `events` after the last erasure is sealed under. */
export function sealedGenerations(events: readonly AnyEvent[]): Set<number> {
  const erasure = lastErasure(events);
  const gens = new Set<number>();
  for (const event of events.slice(erasure ? events.indexOf(erasure) + 1 : 0)) {
    if ((event.type !== 'UserRegistered' && event.type !== 'UserProfileChanged') || event.version === 1 || !event.data.pii) continue;
    const gen = dataKeyGeneration(event.data.pii);
    if (gen !== undefined) gens.add(gen);
  }
  return gens;
}

/**
 * Between the stored events and the pure deciders: personal data is sealed under the user's data
 * key in the log (UserRegistered and UserProfileChanged v2, `pii`), in clear in the deciders.
 * Loading opens v2 events (v1 ones, written before data keys, are already in clear); appending
 * seals. Events before the user's last erasure are not opened: their key is gone, and the erasure
 * resets the aggregate, so nothing of them is needed.
 */
export class UserEventCodec {
  constructor(private readonly keys: UserDataKeys) {}

  /**
   * `personalData: false` opens nothing (no key is read): the events fold without display name,
   * e-mail and phone, which is all an erasure needs, also when the user's key is gone.
   */
  async open(ref: AggregateRef, events: readonly AnyEvent[], options: { personalData?: boolean } = {}): Promise<AnyEvent[]> {
    const erasure = lastErasure(events);
    const erasedAt = options.personalData === false ? events.length : erasure ? events.indexOf(erasure) : -1;
    return Promise.all(events.map((event, i) => this.openOne(ref, event, i > erasedAt)));
  }

  /** Envelopes to append: personal data sealed under the user's data key of at least `minGen`. */
  async seal(ref: AggregateRef, events: ReadonlyArray<UserEvent | TenantEvent>, now: Date, minGen: number): Promise<AnyEvent[]> {
    const base = { tenantId: ref.tenantId, aggregateId: ref.aggregateId, now };
    const owner = { tenantId: ref.tenantId, userId: ref.aggregateId, purpose: 'profile' as const };
    const key = () => this.keys.getOrCreate(ref.tenantId, ref.aggregateId, { minGen });
    return Promise.all(
      events.map(async (event): Promise<AnyEvent> => {
        switch (event.type) {
          case 'UserRegistered': {
            const { userId, language, ...rest } = event.data;
            const pii = sealPersonalData(await key(), owner, rest);
            return createEvent('UserRegistered', 2, { ...base, data: { userId, ...(language ? { language } : {}), ...(pii ? { pii } : {}) } });
          }
          case 'UserProfileChanged': {
            const { language, ...rest } = event.data;
            const pii = sealPersonalData(await key(), owner, rest);
            return createEvent('UserProfileChanged', 2, { ...base, data: { ...(language ? { language } : {}), ...(pii ? { pii } : {}) } });
          }
          default:
            return createEvent(event.type, 1, { ...base, data: event.data as never });
        }
      }),
    );
  }

  private async openOne(ref: AggregateRef, event: AnyEvent, needed: boolean): Promise<AnyEvent> {
    if ((event.type !== 'UserRegistered' && event.type !== 'UserProfileChanged') || event.version === 1) return event;
    const pii = event.data.pii;
    if (!pii || !needed) return inClear(event, {});
    const gen = dataKeyGeneration(pii)!;
    const key = await this.keys.get(ref.tenantId, ref.aggregateId, gen);
    if (key === undefined || key === 'erased') {
      // After the last erasure every key must still be there: the log and the key store disagree
      // (for a moment, when an erasure races this load; for good after an inconsistent restore).
      throw new UserDataKeyGoneError(gen, key === 'erased' ? 'erased' : 'missing');
    }
    return inClear(event, openPersonalData(key, { tenantId: ref.tenantId, userId: ref.aggregateId, purpose: 'profile' }, pii));
  }
}

/** A v2 event as its v1 twin, the shape the deciders fold: the opened personal data in clear. */
function inClear(
  event: EventVersion<'UserRegistered', 2> | EventVersion<'UserProfileChanged', 2>,
  personal: PersonalData,
): EventVersion<'UserRegistered', 1> | EventVersion<'UserProfileChanged', 1> {
  if (event.type === 'UserRegistered') {
    const { pii: _sealed, ...plain } = event.data;
    return { ...event, version: 1, data: { ...plain, ...personalDataOf(personal) } };
  }
  const { pii: _sealed, ...plain } = event.data;
  return { ...event, version: 1, data: { ...plain, ...personalDataOf(personal) } };
}
