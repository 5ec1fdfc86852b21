import { userTag, type Keyring } from '@mfa/crypto';

/** What an erased user is called in the report. */
export type Pseudonymizer = (tenantId: string, userId: string) => string;

/**
 * `erased:` and the first 16 characters (96 bits) of the user's keyed hash tag: the same for all
 * of the user's rows, so they stay countable together, and without the master key it tells
 * nothing of who the user was.
 */
export const pseudonymizer =
  (keyring: Keyring): Pseudonymizer =>
  (tenantId, userId) =>
    `erased:${userTag(keyring, tenantId, userId).slice(0, 16)}`;

/**
 * The user's pseudonyms under every master key of the keyring, oldest first and the current one
 * last, comma-separated (base64url has no comma): what the projections match against
 * erased_users. An erasure records the pseudonym under the key current when it is projected; a
 * master key rotation changes the tag, so a row of that user projected after the rotation (a
 * consumer lagging, a replay) would compute another pseudonym, miss the erasure and keep the user
 * id in clear. Matching under the previous keys too finds it for as long as the key that was
 * current at the erasure stays in MFA_PREVIOUS_ENCRYPTION_KEYS. One HMAC per key and row, no
 * query more.
 */
export const knownPseudonyms = (keyring: Keyring): Pseudonymizer => {
  const each = [...keyring.previous].reverse().concat(keyring).map(pseudonymizer);
  return (tenantId, userId) => each.map((pseudonymOf) => pseudonymOf(tenantId, userId)).join(',');
};
