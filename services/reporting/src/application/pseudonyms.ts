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
