import { phoneNumberInfo } from '@mfa/contracts';
import { ConfigError } from '@mfa/service-kit';

/** SMS_SENDERS as a map: country (or '*') → sender. */
export function parseSenders(text: string | undefined): ReadonlyMap<string, string> {
  const senders = new Map<string, string>();
  for (const pair of (text ?? '').split(',').filter(Boolean)) {
    const [country, sender] = pair.split('=') as [string, string];
    if (senders.has(country)) throw new ConfigError(`SMS_SENDERS: ${country} listed twice`);
    senders.set(country, sender);
  }
  return senders;
}

/**
 * The sender of an SMS by its destination's country (SMS_SENDERS: short codes where a country has
 * them, long numbers elsewhere), else the provider's own. The country comes from the number
 * (libphonenumber), not its prefix: Toronto is +1 too, and gets Canada's sender.
 */
export class Senders {
  constructor(
    private readonly byCountry: ReadonlyMap<string, string>,
    private readonly fallback: string,
  ) {}

  for(to: string): string {
    const country = this.byCountry.size > 0 ? phoneNumberInfo(to).country : undefined;
    return (country !== undefined ? this.byCountry.get(country) : undefined) ?? this.fallback;
  }
}
