import { ConfigError } from '@mfa/service-kit';
import type { DispatchConfig } from '../../config.js';
import { ConsoleSmsProvider } from './console/console.provider.js';
import type { SmsProvider } from './sms-provider.js';
import { TwilioSmsProvider } from './twilio/twilio.provider.js';

type SmsProviderConfig = Pick<
  DispatchConfig,
  | 'NODE_ENV'
  | 'SMS_PROVIDERS'
  | 'TWILIO_API_URL'
  | 'TWILIO_ACCOUNT_SID'
  | 'TWILIO_AUTH_TOKEN'
  | 'TWILIO_FROM_NUMBER'
  | 'TWILIO_TIMEOUT_MS'
  | 'SMS_SENDERS'
>;

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

const BUILDERS: Record<string, (config: SmsProviderConfig) => SmsProvider> = {
  twilio: (config) => {
    const senders = parseSenders(config.SMS_SENDERS);
    // A sender for every other country: TWILIO_FROM_NUMBER, or SMS_SENDERS' `*`.
    const required = senders.has('*') ? (['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN'] as const) : (['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', 'TWILIO_FROM_NUMBER'] as const);
    const missing = required.filter((name) => !config[name]);
    if (missing.length > 0) throw new ConfigError(`SMS provider twilio needs ${missing.join(', ')}`);
    return new TwilioSmsProvider({
      apiUrl: config.TWILIO_API_URL,
      accountSid: config.TWILIO_ACCOUNT_SID!,
      authToken: config.TWILIO_AUTH_TOKEN!,
      fromNumber: senders.get('*') ?? config.TWILIO_FROM_NUMBER!,
      senders,
      timeoutMs: config.TWILIO_TIMEOUT_MS,
    });
  },
  console: (config) => {
    // It prints codes: a production deployment must never fall back to it.
    if (config.NODE_ENV === 'production') throw new ConfigError('SMS provider console is for development only; refused when NODE_ENV=production');
    return new ConsoleSmsProvider();
  },
};

const KNOWN_SMS_PROVIDERS = Object.keys(BUILDERS);

/**
 * The providers of SMS_PROVIDERS, in failover order. Fails at boot on anything that could only
 * fail later: an unknown or repeated name, console in production, missing vendor credentials,
 * or no list at all in production.
 */
export function createSmsProviders(config: SmsProviderConfig): SmsProvider[] {
  if (config.SMS_PROVIDERS === undefined && config.NODE_ENV === 'production') {
    throw new ConfigError(`SMS_PROVIDERS is required when NODE_ENV=production (one or more of: ${KNOWN_SMS_PROVIDERS.join(', ')})`);
  }
  const names = (config.SMS_PROVIDERS ?? 'console')
    .split(',')
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name !== '');
  if (names.length === 0) throw new ConfigError('SMS_PROVIDERS names no provider');
  const unknown = names.filter((name) => !Object.hasOwn(BUILDERS, name));
  if (unknown.length > 0) {
    throw new ConfigError(`SMS_PROVIDERS: unknown provider ${unknown.join(', ')} (known: ${KNOWN_SMS_PROVIDERS.join(', ')})`);
  }
  const repeated = names.filter((name, i) => names.indexOf(name) !== i);
  if (repeated.length > 0) throw new ConfigError(`SMS_PROVIDERS: ${repeated.join(', ')} listed twice`);
  return names.map((name) => BUILDERS[name]!(config));
}
