import { PersonalData } from '@mfa/contracts';
import {
  openWithDataKey,
  PersonalDataContext,
  SealError,
  sealWithDataKey,
  type DataKey,
  type PersonalDataPurpose,
} from '@mfa/crypto';

/** Whose personal data, and what for: the AAD of the sealed value. */
export interface PersonalDataOwner {
  tenantId: string;
  userId: string;
  purpose: PersonalDataPurpose;
}

/** The personal fields present in `source`, and nothing else (no language, no methods). */
export function personalDataOf(source: { displayName?: string | undefined; email?: string | undefined; phoneNumber?: string | undefined; phoneExtension?: string | undefined }): PersonalData {
  const data: PersonalData = {};
  if (source.displayName) data.displayName = source.displayName;
  if (source.email) data.email = source.email;
  if (source.phoneNumber) data.phoneNumber = source.phoneNumber;
  if (source.phoneExtension) data.phoneExtension = source.phoneExtension;
  return data;
}

/**
 * Seals display name, e-mail and phone as the `pii` of a v2 event, under the user's data key;
 * undefined when there is none of them, so an event without personal data carries no `pii`.
 */
export function sealPersonalData(dataKey: DataKey, owner: PersonalDataOwner, data: PersonalData): string | undefined {
  const present = personalDataOf(data);
  if (Object.keys(present).length === 0) return undefined;
  return sealWithDataKey(dataKey, Buffer.from(JSON.stringify(present), 'utf8'), PersonalDataContext(owner.purpose, owner.tenantId, owner.userId));
}

/** Opens a `pii`; throws SealError when it is not this user's, for this purpose, under this key. */
export function openPersonalData(dataKey: DataKey, owner: PersonalDataOwner, sealed: string): PersonalData {
  const plaintext = openWithDataKey(dataKey, sealed, PersonalDataContext(owner.purpose, owner.tenantId, owner.userId));
  let parsed: ReturnType<typeof PersonalData.safeParse>;
  try {
    parsed = PersonalData.safeParse(JSON.parse(plaintext.toString('utf8')));
  } catch (cause) {
    throw new SealError('sealed personal data is not JSON', { cause });
  }
  if (!parsed.success) throw new SealError('sealed personal data is not a profile', { cause: parsed.error });
  return personalDataOf(parsed.data);
}
