import { parsePhoneNumberFromString } from 'libphonenumber-js/max';
import { z } from 'zod';
import { PhoneNumber } from './primitives.js';

export type PhoneType = NonNullable<ReturnType<NonNullable<ReturnType<typeof parsePhoneNumberFromString>>['getType']>>;

/** What the phone-number library can tell of a number: its country (ISO 3166-1 alpha-2) and type, when it knows. */
export interface PhoneNumberInfo {
  country: string | undefined;
  type: PhoneType | undefined;
}

/**
 * Number types that cannot receive a code, or that bill the caller (toll fraud, SMS pumping):
 * refused at registration.
 */
export const UNREACHABLE_PHONE_TYPES: ReadonlySet<PhoneType> = new Set<PhoneType>(['PREMIUM_RATE', 'SHARED_COST', 'UAN', 'VOICEMAIL', 'PAGER']);

const cache = new Map<string, PhoneNumberInfo>();

/** libphonenumber's country and type of an E.164 number (its full metadata); undefined where it cannot tell. */
export function phoneNumberInfo(e164: string): PhoneNumberInfo {
  const hit = cache.get(e164);
  if (hit) return hit;
  const parsed = parsePhoneNumberFromString(e164);
  const info: PhoneNumberInfo = { country: parsed?.country, type: parsed?.isValid() ? parsed.getType() : undefined };
  if (cache.size > 10_000) cache.delete(cache.keys().next().value!);
  cache.set(e164, info);
  return info;
}

/** A user's phone number: E.164, and not a premium-rate, shared-cost or other number that cannot receive a code. */
export const UserPhoneNumber = PhoneNumber.refine((n) => !UNREACHABLE_PHONE_TYPES.has(phoneNumberInfo(n).type as PhoneType), {
  message: 'must be a number that can receive codes: premium-rate, shared-cost, voicemail and pager numbers are refused',
});
export type UserPhoneNumber = z.infer<typeof UserPhoneNumber>;
