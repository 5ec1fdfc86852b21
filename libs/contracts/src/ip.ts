import ipaddr from 'ipaddr.js';

/** An address as given (IPv4, IPv6, an IPv4-mapped IPv6 address taken as its IPv4), or undefined. */
function parseAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address);
  } catch {
    return undefined;
  }
  return ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress() ? (ip as ipaddr.IPv6).toIPv4Address() : ip;
}

/**
 * What per-IP lockout counts by: an IPv4 address as such (an IPv4-mapped IPv6 address too), an
 * IPv6 address by its /64, the block one subscriber line or one cloud instance usually holds: an
 * attacker rotating addresses inside it still counts as one. `undefined` for what is not an address.
 */
export function ipLockKey(address: string): string | undefined {
  const ip = parseAddress(address);
  if (!ip) return undefined;
  if (ip.kind() === 'ipv4') return ip.toString();
  const parts = (ip as ipaddr.IPv6).parts.slice(0, 4);
  return `${new ipaddr.IPv6([...parts, 0, 0, 0, 0]).toString()}/64`;
}

/**
 * A list of CIDR ranges compiled once: IPv4 and IPv6 intervals, merged and sorted, searched by
 * bisection. A lookup parses the address once and compares numbers: no CIDR is parsed per request,
 * whatever the number of ranges (50 trusted IPs, hundreds of named locations, never-block lists).
 */
export interface RangeSet {
  readonly size: number;
  has(address: string): boolean;
}

type Interval<N> = [N, N];

function merge<N extends number | bigint>(intervals: Interval<N>[], one: N): Interval<N>[] {
  intervals.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: Interval<N>[] = [];
  for (const [start, end] of intervals) {
    const last = merged.at(-1);
    if (last && start <= (last[1] as number) + (one as number)) {
      if (end > last[1]) last[1] = end;
    } else merged.push([start, end]);
  }
  return merged;
}

function within<N extends number | bigint>(intervals: readonly Interval<N>[], value: N): boolean {
  let low = 0;
  let high = intervals.length - 1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    const [start, end] = intervals[mid]!;
    if (value < start) high = mid - 1;
    else if (value > end) low = mid + 1;
    else return true;
  }
  return false;
}

const v4 = (ip: ipaddr.IPv4): number => ip.octets.reduce((n, octet) => n * 256 + octet, 0);
const v6 = (ip: ipaddr.IPv6): bigint => ip.parts.reduce((n, part) => (n << 16n) | BigInt(part), 0n);

export function compileRanges(cidrs: readonly string[]): RangeSet {
  const four: Interval<number>[] = [];
  const six: Interval<bigint>[] = [];
  for (const cidr of cidrs) {
    let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
    try {
      parsed = ipaddr.parseCIDR(cidr);
    } catch {
      continue; // settings are validated; an unreadable range can only fail to match
    }
    const [address, bits] = parsed;
    if (address.kind() === 'ipv4') {
      const start = v4(ipaddr.IPv4.networkAddressFromCIDR(cidr));
      four.push([start, start + 2 ** (32 - bits) - 1]);
    } else {
      const size = 1n << BigInt(128 - bits);
      const start = v6(address as ipaddr.IPv6) & ~(size - 1n);
      six.push([start, start + size - 1n]);
    }
  }
  const fours = merge(four, 1);
  const sixes = merge(six, 1n);
  return {
    size: fours.length + sixes.length,
    has(address: string): boolean {
      if (fours.length + sixes.length === 0) return false;
      const ip = parseAddress(address);
      if (!ip) return false;
      return ip.kind() === 'ipv4' ? within(fours, v4(ip as ipaddr.IPv4)) : within(sixes, v6(ip as ipaddr.IPv6));
    },
  };
}

/** Ranges compiled per list (settings arrays are replaced, never changed). */
const compiled = new WeakMap<readonly string[], RangeSet>();

/** Whether a lock key (ipLockKey) lies in one of the CIDR ranges; a /64 key is in a range that holds its first address. */
export function lockKeyInRanges(key: string, cidrs: readonly string[]): boolean {
  if (cidrs.length === 0) return false;
  let ranges = compiled.get(cidrs);
  if (!ranges) compiled.set(cidrs, (ranges = compileRanges(cidrs)));
  return ranges.has(key.endsWith('/64') ? key.slice(0, -3) : key);
}
