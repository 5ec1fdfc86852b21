import { ConfigError } from '@mfa/service-kit';
import type { DispatchConfig } from '../../config.js';
import { ConsoleSmsProvider } from './console/console.provider.js';
import { parseSenders } from './senders.js';
import { parseSmppUrl, SmppSmsProvider, type SmppTarget } from './smpp/smpp.provider.js';
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
  | 'SMPP_URL'
  | 'SMPP_SOURCE_ADDR'
  | 'SMPP_WINDOW'
  | 'SMPP_TIMEOUT_MS'
  | 'SMPP_ENQUIRE_LINK_SECONDS'
  | 'SMPP_VALIDITY_PERIOD'
>;

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
  smpp: (config) => {
    const senders = parseSenders(config.SMS_SENDERS);
    const required = senders.has('*') ? (['SMPP_URL'] as const) : (['SMPP_URL', 'SMPP_SOURCE_ADDR'] as const);
    const missing = required.filter((name) => !config[name]);
    if (missing.length > 0) throw new ConfigError(`SMS provider smpp needs ${missing.join(', ')}`);
    let target: SmppTarget;
    try {
      target = parseSmppUrl(config.SMPP_URL!);
    } catch (error) {
      throw new ConfigError(`SMPP_URL: ${(error as Error).message}`);
    }
    return new SmppSmsProvider({
      target,
      sourceAddr: senders.get('*') ?? config.SMPP_SOURCE_ADDR!,
      senders,
      window: config.SMPP_WINDOW,
      timeoutMs: config.SMPP_TIMEOUT_MS,
      enquireLinkMs: config.SMPP_ENQUIRE_LINK_SECONDS * 1000,
      validity: config.SMPP_VALIDITY_PERIOD,
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
