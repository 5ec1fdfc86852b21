import ipaddr from 'ipaddr.js';

/** An IPv6 address ending in a dotted quad: the part before it, the quad, a zone if any. */
const DOTTED_TAIL = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})(%.*)?$/;

/**
 * An address by its value, whatever its spelling. ipaddr.js reads `::a.b.c.d` (the IPv4-compatible
 * form, deprecated by RFC 4291 §2.5.5.1) as the IPv4-mapped `::ffff:a.b.c.d`, while `::cb00:7105`
 * and `0:0:0:0:0:0:203.0.113.5`, the same address, are read as what they are: `::203.0.113.5`
 * matched IPv4 ranges and shared 203.0.113.5's lock, its other spellings neither. A dotted tail is
 * rewritten as its two hexadecimal groups first, so every spelling reads as one value.
 */
function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 {
  const dotted = DOTTED_TAIL.exec(text);
  if (dotted && ipaddr.IPv4.isValidFourPartDecimal(dotted[2]!)) {
    const [a, b, c, d] = ipaddr.IPv4.parse(dotted[2]!).octets as [number, number, number, number];
    return ipaddr.IPv6.parse(`${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}${dotted[3] ?? ''}`);
  }
  return ipaddr.parse(text);
}

/** An address as given (IPv4, IPv6, an IPv4-mapped IPv6 address taken as its IPv4), or undefined. */
function parseAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = parseIp(address);
  } catch {
    return undefined;
  }
  return ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress() ? (ip as ipaddr.IPv6).toIPv4Address() : ip;
}

/**
 * Whether an address is IPv4-compatible IPv6 (`::a.b.c.d` or `::cb00:7105`: the first 96 bits zero,
 * other than `::` and `::1`), a form RFC 4291 deprecated and no client connects from. The contract
 * refuses it (IpAddress): taken as the IPv4 address it would match IPv4 ranges in one spelling and
 * not in the other; taken as IPv6 it would match no range the sender meant.
 */
export function isIpv4CompatibleAddress(address: string): boolean {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = parseIp(address);
  } catch {
    return false;
  }
  if (ip.kind() !== 'ipv6') return false;
  const parts = (ip as ipaddr.IPv6).parts;
  return parts.slice(0, 6).every((part) => part === 0) && (parts[6] !== 0 || parts[7]! > 1);
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
 * bisection. A lookup parses the address once and compares numbers: no range is parsed per request,
 * whatever the number of ranges (50 trusted IPs, hundreds of named locations, never-block lists).
 * A range written as IPv4-mapped IPv6 (::ffff:203.0.113.0/120) is the IPv4 range, as an
 * IPv4-mapped address is looked up as its IPv4.
 */
export interface RangeSet {
  readonly size: number;
  has(address: string): boolean;
  /** Whether some address lies both in the ranges and in `cidr` (a range inside it, holding it, or across its edge). */
  overlaps(cidr: string): boolean;
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

/** Whether one of the sorted, disjoint intervals shares a value with [start, end]: the first ending at or after `start` begins by `end`. */
function meets<N extends number | bigint>(intervals: readonly Interval<N>[], start: N, end: N): boolean {
  let low = 0;
  let high = intervals.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (intervals[mid]![1] < start) low = mid + 1;
    else high = mid;
  }
  return low < intervals.length && intervals[low]![0] <= end;
}

const v4 = (ip: ipaddr.IPv4): number => ip.octets.reduce((n, octet) => n * 256 + octet, 0);
const v6 = (ip: ipaddr.IPv6): bigint => ip.parts.reduce((n, part) => (n << 16n) | BigInt(part), 0n);

/**
 * The addresses of a CIDR range, host bits ignored; an IPv4-mapped IPv6 range as its IPv4 range.
 * Its address is read by value as addresses are (parseIp): `::203.0.113.0/120` is the range of
 * `::cb00:7100/120`, not of ::ffff:203.0.113.0/120.
 */
function intervalOf(cidr: string): { four: Interval<number> } | { six: Interval<bigint> } | undefined {
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  let bits: number;
  try {
    const slash = cidr.lastIndexOf('/');
    if (slash < 0) return undefined;
    // parseCIDR checks the prefix length against the address's kind.
    [address, bits] = ipaddr.parseCIDR(`${parseIp(cidr.slice(0, slash)).toString()}${cidr.slice(slash)}`);
  } catch {
    return undefined;
  }
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress() && bits >= 96) {
    address = (address as ipaddr.IPv6).toIPv4Address();
    bits -= 96;
  }
  if (address.kind() === 'ipv4') {
    const size = 2 ** (32 - bits);
    const start = v4(address as ipaddr.IPv4) - (v4(address as ipaddr.IPv4) % size);
    return { four: [start, start + size - 1] };
  }
  const size = 1n << BigInt(128 - bits);
  const start = v6(address as ipaddr.IPv6) & ~(size - 1n);
  return { six: [start, start + size - 1n] };
}

export function compileRanges(cidrs: readonly string[]): RangeSet {
  const four: Interval<number>[] = [];
  const six: Interval<bigint>[] = [];
  for (const cidr of cidrs) {
    // Settings are validated; an unreadable range can only fail to match.
    const range = intervalOf(cidr);
    if (range && 'four' in range) four.push(range.four);
    else if (range) six.push(range.six);
  }
  const fours = merge(four, 1);
  const sixes = merge(six, 1n);
  return {
    size: fours.length + sixes.length,
    has(address: string): boolean {
      if (fours.length + sixes.length === 0) return false;
      const ip = parseAddress(address);
      if (!ip) return false;
      if (ip.kind() === 'ipv4') {
        const n = v4(ip as ipaddr.IPv4);
        return meets(fours, n, n);
      }
      const n = v6(ip as ipaddr.IPv6);
      return meets(sixes, n, n);
    },
    overlaps(cidr: string): boolean {
      if (fours.length + sixes.length === 0) return false;
      const range = intervalOf(cidr);
      if (!range) return false;
      return 'four' in range ? meets(fours, ...range.four) : meets(sixes, ...range.six);
    },
  };
}

/** Ranges compiled per list (settings arrays are replaced, never changed). */
const compiled = new WeakMap<readonly string[], RangeSet>();

function rangesOf(cidrs: readonly string[]): RangeSet {
  let ranges = compiled.get(cidrs);
  if (!ranges) compiled.set(cidrs, (ranges = compileRanges(cidrs)));
  return ranges;
}

/**
 * Whether a lock key (ipLockKey) is covered by the CIDR ranges: an IPv4 key lies in one; a /64 key
 * shares an address with one (a range inside the /64, such as a gateway's /128, or holding it). The
 * counts of a /64 do not tell its addresses apart, so a /64 holding a never-block address is never
 * locked nor throttled: locking it would lock that address.
 */
export function lockKeyInRanges(key: string, cidrs: readonly string[]): boolean {
  if (cidrs.length === 0) return false;
  const ranges = rangesOf(cidrs);
  return key.endsWith('/64') ? ranges.overlaps(key) : ranges.has(key);
}

/** Whether a client address lies in one of the CIDR ranges (compiled once per list, as lockKeyInRanges). */
export function addressInRanges(address: string, cidrs: readonly string[]): boolean {
  return cidrs.length > 0 && rangesOf(cidrs).has(address);
}
