import { compileRanges, type RangeSet } from '@mfa/contracts';

/**
 * Proxies trusted by default (DEVICE_API_TRUSTED_PROXIES): this host and the private networks, where
 * the reverse proxy that publishes the device API (docs/device-api.md) usually runs. A phone on the
 * internet never connects from them; one that reaches auth-challenge directly from a private network
 * could name another address in X-Forwarded-For, and so spend that address's budget of failures, and
 * one that names none is not counted at all.
 */
export const DEFAULT_TRUSTED_PROXIES = ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'];

/** The most X-Forwarded-For entries looked at: more hops than any deployment has, and a bound on the work of a long header. */
const MAX_HOPS = 20;

/**
 * Where a device API request comes from: the address that connected, unless it is a trusted proxy;
 * then X-Forwarded-For read from its end (the entry the proxy itself added) back past every trusted
 * proxy, as Express's `trust proxy` does with a list: the first address that is not one is the
 * client. Entries before it are whatever the client sent and are not believed. When no client is
 * named (no X-Forwarded-For, only trusted hops, or an entry that is not an address: a proxy that
 * writes something else there), the source is unknown (undefined: nothing is counted nor refused).
 * The proxy's own address would make every phone behind it share one budget of failures, which one
 * client could spend for all of them: a misconfigured proxy must not turn the throttle into a way
 * to refuse every approval.
 */
export function sourceAddress(peer: string | undefined, forwardedFor: string | string[] | undefined, trusted: RangeSet): string | undefined {
  if (!peer || !trusted.has(peer)) return peer;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : (forwardedFor ?? '')).split(',').slice(-MAX_HOPS);
  for (let n = hops.length - 1; n >= 0; n--) {
    const hop = hops[n]!.trim();
    if (hop === '' || !isAddress(hop)) return undefined;
    if (!trusted.has(hop)) return hop;
  }
  return undefined;
}

/** The trusted proxies, compiled once (compileRanges). A single address is its own /32 or /128. */
export function trustedProxies(entries: readonly string[]): RangeSet {
  return compileRanges(entries.map((entry) => (entry.includes('/') ? entry : `${entry}/${entry.includes(':') ? 128 : 32}`)));
}

/** Every address, IPv4 and IPv6: what it holds is what parses as an address. */
const EVERY_ADDRESS = compileRanges(['0.0.0.0/0', '::/0']);
const isAddress = (text: string): boolean => EVERY_ADDRESS.has(text);
