import ipaddr from 'ipaddr.js';

/**
 * What per-IP lockout counts by: an IPv4 address as such (an IPv4-mapped IPv6 address too), an
 * IPv6 address by its /64, the block one subscriber line or one cloud instance usually holds: an
 * attacker rotating addresses inside it still counts as one. `undefined` for what is not an address.
 */
export function ipLockKey(address: string): string | undefined {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address);
  } catch {
    return undefined;
  }
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) ip = (ip as ipaddr.IPv6).toIPv4Address();
  if (ip.kind() === 'ipv4') return ip.toString();
  const parts = (ip as ipaddr.IPv6).parts.slice(0, 4);
  return `${new ipaddr.IPv6([...parts, 0, 0, 0, 0]).toString()}/64`;
}

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];
const parsedRanges = new WeakMap<readonly string[], Range[]>();

/**
 * Whether a lock key (ipLockKey) lies in one of the CIDR ranges; a /64 key is in a range that
 * holds its first address. The parsed ranges are kept per array (settings arrays are never changed).
 */
export function lockKeyInRanges(key: string, cidrs: readonly string[]): boolean {
  if (cidrs.length === 0) return false;
  let ranges = parsedRanges.get(cidrs);
  if (!ranges) {
    ranges = cidrs.flatMap((c) => {
      try {
        return [ipaddr.parseCIDR(c)];
      } catch {
        return [];
      }
    });
    parsedRanges.set(cidrs, ranges);
  }
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(key.endsWith('/64') ? key.slice(0, -3) : key);
  } catch {
    return false;
  }
  return ranges.some(([net, bits]) => net.kind() === ip.kind() && ip.match(net as never, bits));
}
