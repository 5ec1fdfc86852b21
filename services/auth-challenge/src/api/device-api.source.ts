import { compileRanges, type RangeSet } from '@mfa/contracts';

/**
 * Proxies trusted by default (DEVICE_API_TRUSTED_PROXIES): this host only, as Express's `trust
 * proxy` would. Not the private networks: phones on an office's Wi-Fi, pods and containers connect
 * from them, and any of them could name another address in X-Forwarded-For (and spend its budget of
 * failures) or name none (and not be counted). A proxy on another host is listed by its operator.
 */
export const DEFAULT_TRUSTED_PROXIES = ['127.0.0.0/8', '::1/128'];

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
    const hop = withoutPort(hops[n]!.trim());
    if (hop === '' || !isAddress(hop)) return undefined;
    if (!trusted.has(hop)) return hop;
  }
  return undefined;
}

/**
 * An X-Forwarded-For entry without the port some proxies add (`203.0.113.9:51234`, as Azure's
 * Application Gateway writes it; `[2001:db8::1]:443`, and a bracketed address without one).
 */
function withoutPort(hop: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(hop);
  if (bracketed) return bracketed[1]!;
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(hop);
  return v4 ? v4[1]! : hop;
}

/** The trusted proxies, compiled once (compileRanges). A single address is its own /32 or /128. */
export function trustedProxies(entries: readonly string[]): RangeSet {
  return compileRanges(entries.map((entry) => (entry.includes('/') ? entry : `${entry}/${entry.includes(':') ? 128 : 32}`)));
}

/** Every address, IPv4 and IPv6: what it holds is what parses as an address. */
const EVERY_ADDRESS = compileRanges(['0.0.0.0/0', '::/0']);
const isAddress = (text: string): boolean => EVERY_ADDRESS.has(text);
