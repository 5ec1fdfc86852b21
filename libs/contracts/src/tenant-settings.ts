import ipaddr from 'ipaddr.js';
import { getCountries } from 'libphonenumber-js/max';
import { z } from 'zod';
import { phoneNumberInfo } from './phone.js';
import { Email, Label, Method } from './primitives.js';

/**
 * Tenant settings (MISSION "Tenant settings"; docs/api.md, tenants.configure and tenants.get).
 * `TenantSettings` is the complete record with every default filled in: what tenants.get answers
 * and what tenant events carry. An event written before a setting existed parses with that
 * setting's default. `TenantSettingsPatch` is what tenants.configure accepts: any subset, every
 * object strict, so a misspelled or unknown name is refused instead of silently ignored.
 * Rules that involve several fields (public ranges unless on premises, unique names) are checked
 * on the merged result by `settingsProblems`. The patch's rules may be stricter than the record's:
 * tenant events are read for ever, so a rule tightened later applies to new values (the patch)
 * and never makes a stored setting unreadable.
 */

export const DEFAULT_CODE_LIFETIME_SECONDS = 180;
export const DEFAULT_MAX_ATTEMPTS = 5;
export const MAX_TRUSTED_IP_RANGES = 50;
export const MAX_NAMED_LOCATIONS = 200;
export const MAX_RANGES_PER_LOCATION = 200;
export const MAX_NOTIFICATION_EMAILS = 20;
export const MAX_NEVER_BLOCK_RANGES = 200;

const regionNames = new Intl.DisplayNames(['en'], { type: 'region', fallback: 'none' });
/** ISO 3166-1 alpha-2, as ICU knows them ("ZZ", unknown region, is not a country). */
export const CountryCode = z
  .string()
  // abort: without it zod runs the refinement after a failed regex, and Intl.DisplayNames throws a
  // RangeError for what is not a region code ("", "a", "A1").
  .regex(/^[A-Z]{2}$/, { error: 'must be an ISO 3166-1 alpha-2 country code such as FR', abort: true })
  .refine((code) => code !== 'ZZ' && regionNames.of(code) !== undefined, 'must be an ISO 3166-1 alpha-2 country code');

export const Ipv4Cidr = z.cidrv4({ error: 'must be an IPv4 CIDR range such as 203.0.113.0/24' });
export const IpCidr = z.union([z.cidrv4(), z.cidrv6()], { error: 'must be an IPv4 or IPv6 CIDR range' });

/** A North American (US) number in E.164: what Twilio accepts as a US caller ID. */
export const UsPhoneNumber = z.string().regex(/^\+1[2-9]\d{2}[2-9]\d{6}$/, 'must be a US number in E.164 such as +18665394191');

/**
 * The country codes phone numbers have (libphonenumber's, which name each registered user's
 * `phoneCountry`): ICU also knows regions no number belongs to (UK, EU, UN…), which a country rule
 * would never match (a block that blocks nothing, an allow-list that refuses every GB number).
 */
const PHONE_COUNTRIES: ReadonlySet<string> = new Set(getCountries());
const PhoneCountryCode = CountryCode.refine((code) => PHONE_COUNTRIES.has(code), 'must be the country code phone numbers have (GB for the United Kingdom, not UK)');
/** Within the North American plan, a number of the US itself (not Canada or the Caribbean). */
const UsCallerId = UsPhoneNumber.refine((n) => phoneNumberInfo(n).country === 'US', 'must be a US number in E.164 such as +18665394191 (not Canada or the Caribbean)');

const unique = <T>(items: readonly T[]) => new Set(items).size === items.length;

// ---- the complete settings, defaults filled in ----------------------------------------------

const lockout = {
  /** Denials (wrong codes, later denied pushes and calls) before the account is locked. */
  threshold: z.int().min(1).max(100),
  counterResetMinutes: z.int().min(1).max(1440),
  autoUnblockMinutes: z.int().min(1).max(1440),
};
/**
 * Lockout per client IP across users (password spraying, MFA bombing): denials from one address
 * (an IPv6 address counts by its /64) within `windowMinutes` reaching `threshold` refuse every start
 * from it for `durationMinutes`, whoever the user. Addresses in `neverBlock` are never locked (the
 * tenant's own egress, a VPN concentrator); `dryRun` records what would be locked and locks nothing.
 */
const ipLockout = {
  enabled: z.boolean(),
  threshold: z.int().min(5).max(10_000),
  windowMinutes: z.int().min(1).max(1440),
  durationMinutes: z.int().min(1).max(10_080),
  neverBlock: z.array(IpCidr).max(MAX_NEVER_BLOCK_RANGES, `at most ${MAX_NEVER_BLOCK_RANGES} ranges`),
  dryRun: z.boolean(),
};
const fraudAlert = {
  enabled: z.boolean(),
  autoBlock: z.boolean(),
  /** The digit a user presses in a call to report fraud. */
  code: z.string().regex(/^\d$/, 'must be one digit'),
};
/**
 * The optional fields of the reports (MFA Server's report settings): false leaves the user's name,
 * or e-mail, out of every sign-in recorded from then on (the challenge events and the report rows
 * built from them; fraud alerts show what their sign-in's row holds). The phone number stays: it is
 * where codes go.
 */
const reportFields = { displayName: z.boolean(), email: z.boolean() };
const trustedIps = {
  ranges: z.array(Ipv4Cidr).max(MAX_TRUSTED_IP_RANGES, `at most ${MAX_TRUSTED_IP_RANGES} ranges`),
  /** false: only public ranges may be listed; true: private ranges too (MFA Server on premises). */
  onPremises: z.boolean(),
  /** Bypass MFA for federated users whose IdP says they are inside the corporate network. */
  federatedBypass: z.boolean(),
};
const namedLocation = {
  trusted: z.boolean(),
  ranges: z.array(IpCidr).min(1).max(MAX_RANGES_PER_LOCATION, `at most ${MAX_RANGES_PER_LOCATION} ranges per location`),
};
/** As stored (events written when the name's rule was looser still read); a new name is a Label. */
const NamedLocation = z.strictObject({ name: z.string().min(1).max(64), ...namedLocation });
const NamedLocationPatch = z.strictObject({ name: Label, ...namedLocation });
const rememberMfa = { enabled: z.boolean(), days: z.int().min(1).max(365) };
const appPasswords = { allowed: z.boolean() };
const voice = { callerId: UsPhoneNumber, pinMode: z.boolean() };
const voicePatch = { ...voice, callerId: UsCallerId };
const sms = {
  /** null: every country; otherwise only these. */
  allowedCountries: z.array(CountryCode).max(250).nullable(),
  blockedCountries: z.array(CountryCode).max(250),
};
const smsPatch = { allowedCountries: z.array(PhoneCountryCode).max(250).nullable(), blockedCountries: z.array(PhoneCountryCode).max(250) };

export const DEFAULT_TENANT_SETTINGS = Object.freeze({
  codeLifetimeSeconds: DEFAULT_CODE_LIFETIME_SECONDS,
  maxAttempts: DEFAULT_MAX_ATTEMPTS,
  enabledMethods: ['sms', 'voice', 'push', 'totp'] as Method[],
  securityDefaults: false,
  lockout: { threshold: 10, counterResetMinutes: 15, autoUnblockMinutes: 15 },
  ipLockout: { enabled: true, threshold: 50, windowMinutes: 15, durationMinutes: 60, neverBlock: [] as string[], dryRun: false },
  fraudAlert: { enabled: true, autoBlock: true, code: '0' },
  notificationEmails: [] as string[],
  reportFields: { displayName: true, email: true },
  trustedIps: { ranges: [] as string[], onPremises: false, federatedBypass: false },
  namedLocations: [] as Array<z.infer<typeof NamedLocation>>,
  rememberMfa: { enabled: false, days: 90 },
  appPasswords: { allowed: false },
  voice: { callerId: '+18665394191', pinMode: false },
  sms: { allowedCountries: null as string[] | null, blockedCountries: [] as string[] },
});

/** A settings section whose every field defaults; an absent section is all defaults. */
function section<S extends Record<string, z.ZodType>>(shape: S, defaults: { [K in keyof S]: z.output<S[K]> }) {
  const withDefaults = Object.fromEntries(
    Object.entries(shape).map(([key, schema]) => [key, schema.default(defaults[key as keyof S] as never)]),
  ) as { [K in keyof S]: z.ZodDefault<S[K]> };
  return z.object(withDefaults).prefault({} as never);
}

const D = DEFAULT_TENANT_SETTINGS;
export const TenantSettings = z.object({
  /** Lifetime of a challenge and its code: 180 s by default (cloud), 300 s (server default) possible. */
  codeLifetimeSeconds: z.int().min(30).max(600).default(D.codeLifetimeSeconds),
  /** Wrong codes accepted per challenge before it is denied. */
  maxAttempts: z.int().min(1).max(10).default(D.maxAttempts),
  /** Methods the tenant allows; a user whose only methods are disabled must register again. */
  enabledMethods: z.array(Method).min(1).default(() => [...D.enabledMethods]),
  /** When true only push and totp may be used, whatever else is enabled. */
  securityDefaults: z.boolean().default(D.securityDefaults),
  lockout: section(lockout, D.lockout),
  ipLockout: section(ipLockout, { ...D.ipLockout, neverBlock: [] }),
  fraudAlert: section(fraudAlert, D.fraudAlert),
  notificationEmails: z.array(Email).max(MAX_NOTIFICATION_EMAILS).default(() => []),
  reportFields: section(reportFields, D.reportFields),
  trustedIps: section(trustedIps, { ...D.trustedIps, ranges: [] }),
  namedLocations: z.array(NamedLocation).max(MAX_NAMED_LOCATIONS).default(() => []),
  rememberMfa: section(rememberMfa, D.rememberMfa),
  appPasswords: section(appPasswords, D.appPasswords),
  voice: section(voice, D.voice),
  sms: section(sms, { ...D.sms, blockedCountries: [] }),
});
export type TenantSettings = z.infer<typeof TenantSettings>;
export const defaultTenantSettings = (): TenantSettings => TenantSettings.parse({});

// ---- the patch tenants.configure accepts -----------------------------------------------------

const partialSection = <S extends Record<string, z.ZodType>>(shape: S) =>
  z.strictObject(Object.fromEntries(Object.entries(shape).map(([k, s]) => [k, s.optional()])) as { [K in keyof S]: z.ZodOptional<S[K]> });

/**
 * A change to some settings: omitted settings (and omitted fields of a section) keep their value;
 * arrays are replaced whole. Spelled out rather than derived with `.partial()`, which in zod 4
 * would still fill omitted fields with defaults and turn a partial change into a reset.
 */
export const TenantSettingsPatch = z.strictObject({
  codeLifetimeSeconds: TenantSettings.shape.codeLifetimeSeconds.unwrap().optional(),
  maxAttempts: TenantSettings.shape.maxAttempts.unwrap().optional(),
  enabledMethods: TenantSettings.shape.enabledMethods.unwrap().optional(),
  securityDefaults: z.boolean().optional(),
  lockout: partialSection(lockout).optional(),
  ipLockout: partialSection(ipLockout).optional(),
  fraudAlert: partialSection(fraudAlert).optional(),
  notificationEmails: TenantSettings.shape.notificationEmails.unwrap().optional(),
  reportFields: partialSection(reportFields).optional(),
  trustedIps: partialSection(trustedIps).optional(),
  namedLocations: z.array(NamedLocationPatch).max(MAX_NAMED_LOCATIONS).optional(),
  rememberMfa: partialSection(rememberMfa).optional(),
  appPasswords: partialSection(appPasswords).optional(),
  voice: partialSection(voicePatch).optional(),
  sms: partialSection(smsPatch).optional(),
});
export type TenantSettingsPatch = z.infer<typeof TenantSettingsPatch>;

const SECTIONS = ['lockout', 'ipLockout', 'fraudAlert', 'reportFields', 'trustedIps', 'rememberMfa', 'appPasswords', 'voice', 'sms'] as const;

/** `current` with `patch` applied: sections merge field by field, everything else is replaced. */
export function applySettingsPatch(current: TenantSettings, patch: TenantSettingsPatch): TenantSettings {
  const next: Record<string, unknown> = { ...current };
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    next[key] = (SECTIONS as readonly string[]).includes(key)
      ? { ...(current[key as (typeof SECTIONS)[number]] as object), ...stripUndefined(value as object) }
      : value;
  }
  // A method listed twice means nothing more than once; dropping repeats keeps "no change" detectable.
  next.enabledMethods = [...new Set(next.enabledMethods as Method[])];
  return TenantSettings.parse(next);
}

function stripUndefined(value: object): object {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined));
}

export function sameSettings(a: TenantSettings, b: TenantSettings): boolean {
  return JSON.stringify(TenantSettings.parse(a)) === JSON.stringify(TenantSettings.parse(b));
}

/**
 * Whether an IPv4 range is outside every range reserved for private, loopback, link-local, shared
 * (carrier-grade NAT), benchmarking, multicast or other special use (SPECIAL_IPV4). The
 * documentation ranges (RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) count as public:
 * they are nobody's private network (no network routes them, so trusting one trusts no real
 * client), and examples and tests use them as the public addresses they stand for.
 */
function isPublicIpv4Range(cidr: string): boolean {
  const [, prefix] = ipaddr.IPv4.parseCIDR(cidr);
  const first = ipaddr.IPv4.networkAddressFromCIDR(cidr);
  // A wide range can start and end in public space yet contain a special one (8.0.0.0/4 holds 10/8).
  for (const special of SPECIAL_IPV4) {
    const [net, bits] = special;
    if (bits >= prefix ? net.match(first, prefix) : first.match(net, bits)) return false;
  }
  return true;
}
/**
 * Global unicast IPv6 (2000::/3) outside the IETF's special blocks (Teredo, benchmarking, ORCHID)
 * and 6to4 (which carries IPv4 space, private included). The documentation prefix 2001:db8::/32
 * counts as public, as IPv4's documentation ranges do (isPublicIpv4Range).
 */
function isPublicIpv6Range(cidr: string): boolean {
  const [address, prefix] = ipaddr.IPv6.parseCIDR(cidr);
  if (prefix < 3 || !address.match(GLOBAL_UNICAST_IPV6, 3)) return false;
  for (const [net, bits] of SPECIAL_IPV6) {
    if (bits >= prefix ? net.match(address, prefix) : address.match(net, bits)) return false;
  }
  return true;
}
const GLOBAL_UNICAST_IPV6 = ipaddr.IPv6.parse('2000::');
const SPECIAL_IPV6: Array<[ipaddr.IPv6, number]> = ['2001::/23', '2002::/16', '3fff::/20'].map((c) => ipaddr.IPv6.parseCIDR(c));

const SPECIAL_IPV4: Array<[ipaddr.IPv4, number]> = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '224.0.0.0/3',
].map((c) => ipaddr.IPv4.parseCIDR(c));

/**
 * Rules across fields of the merged settings, as contract-style messages; empty when valid.
 * Documentation ranges (RFC 5737, and 2001:db8::/32) count as public (isPublicIpv4Range).
 */
export function settingsProblems(settings: TenantSettings): string[] {
  const problems: string[] = [];
  if (!settings.trustedIps.onPremises) {
    const notPublic = settings.trustedIps.ranges.filter((r) => !isPublicIpv4Range(r));
    if (notPublic.length > 0) {
      problems.push(`settings.trustedIps.ranges: ${notPublic.length} range(s) are not public; only public ranges are allowed unless trustedIps.onPremises is true`);
    }
    // A trusted named location bypasses MFA as trustedIps does: the same rule, in both families.
    settings.namedLocations.forEach((location, n) => {
      if (!location.trusted) return;
      const notPublicHere = location.ranges.filter((r) => !(r.includes(':') ? isPublicIpv6Range(r) : isPublicIpv4Range(r)));
      if (notPublicHere.length > 0) {
        problems.push(`settings.namedLocations[${n}].ranges: ${notPublicHere.length} range(s) of a trusted location are not public; only public ranges are allowed unless trustedIps.onPremises is true`);
      }
    });
  }
  if (!unique(settings.namedLocations.map((l) => l.name))) problems.push('settings.namedLocations: names must be unique');
  if (!unique(settings.notificationEmails.map((e) => e.toLowerCase()))) problems.push('settings.notificationEmails: addresses must be unique');
  return problems;
}
