import { compileRanges, type RangeSet } from '@mfa/contracts';
import parseForwarded from 'forwarded-parse';

/**
 * Proxies trusted by default (DEVICE_API_TRUSTED_PROXIES): this host only, as Express's `trust
 * proxy` would. Not the private networks: phones on an office's Wi-Fi, pods and containers connect
 * from them, and any of them could name another address in X-Forwarded-For (and spend its budget of
 * failures) or name none (and not be counted). A proxy on another host is listed by its operator.
 */
export const DEFAULT_TRUSTED_PROXIES = ['127.0.0.0/8', '::1/128'];

/** The most forwarded hops looked at: more than any deployment has, and a bound on the work of a long header. */
const MAX_HOPS = 20;

/**
 * The header the trusted proxies write the client's address in (DEVICE_API_FORWARDED_HEADER):
 * `X-Forwarded-For`, or RFC 7239's `Forwarded` (its `for=` parameter). Only that one is read: a
 * proxy appends to one of them and passes the other on as the client wrote it, so reading the
 * other too would let a client name its own source.
 */
export type ForwardedHeader = 'x-forwarded-for' | 'forwarded';
export const FORWARDED_HEADERS = ['x-forwarded-for', 'forwarded'] as const satisfies readonly ForwardedHeader[];

/**
 * Where a device API request comes from: the address that connected, unless it is a trusted proxy;
 * then the forwarded hops (X-Forwarded-For's entries, or the `for=` of Forwarded's elements) read
 * from the end (the hop the proxy itself added) back past every trusted proxy, as Express's `trust
 * proxy` does with a list: the first address that is not one is the client. Hops before it are
 * whatever the client sent and are not believed. When no client is named (no header, only trusted
 * hops, or a hop that is not an address: a proxy that writes something else there, or Forwarded's
 * `unknown` and obfuscated `_names`), the source is unknown (undefined: nothing is counted nor
 * refused). The proxy's own address would make every phone behind it share one budget of failures,
 * which one client could spend for all of them: a misconfigured proxy must not turn the throttle
 * into a way to refuse every approval.
 */
export function sourceAddress(
  peer: string | undefined,
  forwarded: string | string[] | undefined,
  trusted: RangeSet,
  header: ForwardedHeader = 'x-forwarded-for',
): string | undefined {
  if (!peer || !trusted.has(peer)) return peer;
  // Several header lines are one list (RFC 9110 §5.3, RFC 7239 §4), as Node joins them.
  const hops = (Array.isArray(forwarded) ? forwarded.join(',') : (forwarded ?? '')).split(',').slice(-MAX_HOPS);
  const address = header === 'forwarded' ? forwardedFor : xForwardedFor;
  for (let n = hops.length - 1; n >= 0; n--) {
    const hop = address(hops[n]!.trim());
    if (hop === undefined) return undefined;
    if (!trusted.has(hop)) return hop;
  }
  return undefined;
}

/** An X-Forwarded-For entry's address, or undefined when it is not one. */
function xForwardedFor(hop: string): string | undefined {
  const address = withoutPort(hop);
  return address !== '' && isAddress(address) ? address : undefined;
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

/** RFC 7239 §6 node: an IPv4 address or a bracketed IPv6 one, with an optional port, real or obfuscated. */
const FORWARDED_NODE = /^(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)\])(?::(?:\d{1,5}|_[A-Za-z0-9._-]+))?$/;

/**
 * The address in one Forwarded element's `for=` (`for=192.0.2.60`, `for="[2001:db8:cafe::17]:4711"`,
 * RFC 7239 §4, §6), or undefined: no `for`, `unknown`, an obfuscated `_name`, an IPv6 address
 * without its brackets, or an element that is not RFC 7239's syntax. Elements are split at commas
 * before they are parsed: the hops read (up to the client's) are written by trusted proxies, whose
 * nodes hold no comma, and what the client wrote before them, however malformed, is never parsed
 * (parsing the whole header would let a client's unterminated quote hide the hop its proxy added).
 */
function forwardedFor(element: string): string | undefined {
  let params: Record<string, string> | undefined;
  try {
    params = parseForwarded(element)[0];
  } catch {
    return undefined;
  }
  const node = params && Object.hasOwn(params, 'for') ? FORWARDED_NODE.exec(params['for']!) : null;
  const address = node?.[1] ?? node?.[2];
  return address !== undefined && isAddress(address) ? address : undefined;
}

/** The trusted proxies, compiled once (compileRanges). A single address is its own /32 or /128. */
export function trustedProxies(entries: readonly string[]): RangeSet {
  return compileRanges(entries.map((entry) => (entry.includes('/') ? entry : `${entry}/${entry.includes(':') ? 128 : 32}`)));
}

/** Every address, IPv4 and IPv6: what it holds is what parses as an address. */
const EVERY_ADDRESS = compileRanges(['0.0.0.0/0', '::/0']);
const isAddress = (text: string): boolean => EVERY_ADDRESS.has(text);
