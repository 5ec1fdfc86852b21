import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { Label, TenantId } from '@mfa/contracts';

/** How a client's users give their code: in answer to an Access-Challenge, or as the first request's password. */
export const PasswordMode = z.enum(['challenge', 'otp']);
export type PasswordMode = z.infer<typeof PasswordMode>;

/** RFC 2865 §3 asks for at least 16 octets of shared secret; shorter ones are guessable offline from one captured packet. */
export const MIN_SECRET_LENGTH = 16;

/** An address range in CIDR notation (a bare address is a range of one). */
const Cidr = z
  .string()
  .max(64)
  .transform((text, ctx) => {
    const withPrefix = text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`;
    try {
      const [address, bits] = ipaddr.parseCIDR(withPrefix);
      return { text, address, bits };
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be an IPv4 or IPv6 range in CIDR notation, such as 192.0.2.0/24 or 2001:db8::/32' });
      return z.NEVER;
    }
  });

/** One entry of RADIUS_CLIENTS: who may ask (a range of source addresses), with which secret, for which tenant. */
export const RadiusClientEntry = z.strictObject({
  cidr: Cidr,
  secret: z
    .string()
    .min(MIN_SECRET_LENGTH, `must be at least ${MIN_SECRET_LENGTH} characters`)
    .max(128, 'must be at most 128 characters'),
  tenantId: TenantId,
  name: Label.optional(),
  apiKey: z.string().min(1).max(512).optional(),
  passwordMode: PasswordMode.optional(),
});

/** A RADIUS client as the service uses it. */
export interface RadiusClient {
  /** The name reports show as serverName: the entry's name, else its range. */
  readonly name: string;
  readonly cidr: string;
  readonly tenantId: string;
  readonly secret: Buffer;
  /** The tenant's API key (challenges scope); undefined: the platform key acts for the tenant. */
  readonly apiKey: string | undefined;
  readonly passwordMode: PasswordMode;
}

/** RADIUS_CLIENTS: a JSON array of entries, each range given once. */
export const RadiusClients = z.preprocess(
  (value, ctx) => {
    if (value === undefined || value === '') return [];
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value) as unknown;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'must be a JSON array of {cidr, secret, tenantId, name?, apiKey?, passwordMode?}' });
      return z.NEVER;
    }
  },
  z
    .array(RadiusClientEntry, { error: 'must be a JSON array of {cidr, secret, tenantId, name?, apiKey?, passwordMode?}' })
    .max(10_000)
    .superRefine((entries, ctx) => {
      const seen = new Map<string, number>();
      entries.forEach((e, i) => {
        // The range as matched: 10.0.2.77/24 is 10.0.2.0/24, and so is ::ffff:10.0.2.0/120.
        const { address, bits } = rangeOf(e.cidr.address, e.cidr.bits);
        const key = `${address.kind()}:${address.toNormalizedString()}/${bits}`;
        const first = seen.get(key);
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'cidr'], message: `names the same range as entry ${first}` });
        else seen.set(key, i);
      });
    }),
);
export type RadiusClientEntries = z.infer<typeof RadiusClients>;

/**
 * A range as it matches: an IPv4-mapped IPv6 range is the IPv4 range, and the address is the
 * range's first (host bits cleared).
 */
function rangeOf(written: ipaddr.IPv4 | ipaddr.IPv6, writtenBits: number): { address: ipaddr.IPv4 | ipaddr.IPv6; bits: number } {
  const mapped = written.kind() === 'ipv6' && (written as ipaddr.IPv6).isIPv4MappedAddress() && writtenBits >= 96;
  const address = mapped ? (written as ipaddr.IPv6).toIPv4Address() : written;
  const bits = mapped ? writtenBits - 96 : writtenBits;
  const bytes = address.toByteArray().map((byte, n) => (n * 8 >= bits ? 0 : n * 8 + 8 <= bits ? byte : byte & (0xff << (8 - (bits - n * 8))) & 0xff));
  return { address: ipaddr.fromByteArray(bytes), bits };
}

/** IPv4-mapped IPv6 (::ffff:192.0.2.1, what a dual-stack socket reports) is the IPv4 address. */
export function normalizeAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    return ipaddr.process(text);
  } catch {
    return undefined;
  }
}

/**
 * The address as text, normalized as normalizeAddress does, or undefined when it is none. Plain
 * IPv4 (the usual case) is not parsed, and nothing that is not an address reaches ipaddr, whose
 * refusal is an exception (costly on a path taken for every request).
 */
export function normalizedText(text: string): string | undefined {
  if (isIPv4(text)) return text;
  if (!isIPv6(text)) return undefined;
  return normalizeAddress(text)?.toString();
}

/**
 * The clients, matched by source address: the most specific range that holds the address wins
 * (a /32 for one VPN inside a /24 for a site). Lookups are cached per address.
 */
export class ClientDirectory {
  private readonly ranges: { client: RadiusClient; address: ipaddr.IPv4 | ipaddr.IPv6; bits: number }[];
  private readonly cache = new Map<string, RadiusClient | null>();

  constructor(entries: RadiusClientEntries, defaultPasswordMode: PasswordMode) {
    this.ranges = entries
      .map((e) => {
        const { address, bits } = rangeOf(e.cidr.address, e.cidr.bits);
        return {
          address,
          bits,
          client: {
            name: e.name ?? e.cidr.text,
            cidr: e.cidr.text,
            tenantId: e.tenantId,
            secret: Buffer.from(e.secret, 'utf8'),
            apiKey: e.apiKey,
            passwordMode: e.passwordMode ?? defaultPasswordMode,
          },
        };
      })
      .sort((a, b) => b.bits - a.bits);
  }

  get size(): number {
    return this.ranges.length;
  }

  /** The client a datagram from `source` belongs to, or undefined: then it gets no answer. */
  match(source: string): RadiusClient | undefined {
    const cached = this.cache.get(source);
    if (cached !== undefined) return cached ?? undefined;
    const address = normalizeAddress(source);
    const found = address ? this.ranges.find((r) => r.address.kind() === address.kind() && address.match(r.address, r.bits))?.client : undefined;
    // Bounded: a scan from many spoofed addresses must not grow the cache without end.
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.set(source, found ?? null);
    return found;
  }
}
