import { isIpv4CompatibleAddress } from '@mfa/contracts';
import { normalizedText } from './clients.js';

/**
 * The client's IP address from Calling-Station-Id, when the NAS put one there: VPNs write the
 * connecting address as `192.0.2.10`, `192.0.2.10:51234` (OpenVPN), `192.0.2.10[4500]`
 * (strongSwan), `2001:db8::1`, `[2001:db8::1]:51234` or `2001:db8::1[4500]`. Anything else (a
 * MAC address from a Wi-Fi controller, a phone number from a dial-up NAS) gives none: the
 * challenge then has no client IP, and no trusted-IP bypass applies. The NAS's own address is
 * never used in its place.
 */
export function clientIpOf(callingStationId: string | undefined): string | undefined {
  if (callingStationId === undefined) return undefined;
  const text = callingStationId.trim();
  if (text.length === 0 || text.length > 64) return undefined;
  const candidates = [text];
  const bracketPort = /^(.+)\[\d{1,5}\]$/.exec(text); // ip[port]
  if (bracketPort) candidates.push(bracketPort[1]!);
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(text); // [v6] or [v6]:port
  if (bracketed) candidates.push(bracketed[1]!);
  const v4Port = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(text); // v4:port
  if (v4Port) candidates.push(v4Port[1]!);
  for (const candidate of candidates) {
    // Only the canonical written forms: ipaddr also reads "0x7f.1" or "127.1", which no NAS writes.
    if (!/^[0-9a-fA-F:.]+$/.test(candidate)) continue;
    if (!candidate.includes(':') && !/^\d{1,3}(?:\.\d{1,3}){3}$/.test(candidate)) continue;
    // IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291): no NAS means it, ipaddr would read
    // one spelling as the IPv4 address and not the others, and the challenge API refuses it.
    if (candidate.includes(':') && isIpv4CompatibleAddress(candidate)) continue;
    const address = normalizedText(candidate);
    if (address) return address;
  }
  return undefined;
}
