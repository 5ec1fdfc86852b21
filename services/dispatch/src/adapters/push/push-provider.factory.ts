import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '@mfa/service-kit';
import type { DispatchConfig } from '../../config.js';
import { ApnsPushProvider } from './apns/apns.provider.js';
import { FcmPushProvider } from './fcm/fcm.provider.js';
import { parseServiceAccount } from './fcm/service-account.js';
import type { PushProvider } from './push-provider.js';

type PushProviderConfig = Pick<
  DispatchConfig,
  | 'FCM_SERVICE_ACCOUNT_JSON'
  | 'FCM_SERVICE_ACCOUNT_FILE'
  | 'FCM_API_URL'
  | 'APNS_KEY_FILE'
  | 'APNS_KEY'
  | 'APNS_KEY_ID'
  | 'APNS_TEAM_ID'
  | 'APNS_TOPIC'
  | 'APNS_URL'
  | 'APNS_CA_FILE'
  | 'PUSH_TIMEOUT_MS'
>;

type ReadFile = (path: string) => string;
const readText: ReadFile = (path) => readFileSync(path, 'utf8');

function read(name: string, path: string, readFile: ReadFile): string {
  try {
    return readFile(path);
  } catch (error) {
    throw new ConfigError(`${name}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

function fcm(config: PushProviderConfig, readFile: ReadFile): PushProvider | undefined {
  if (config.FCM_SERVICE_ACCOUNT_JSON && config.FCM_SERVICE_ACCOUNT_FILE) throw new ConfigError('set FCM_SERVICE_ACCOUNT_JSON or FCM_SERVICE_ACCOUNT_FILE, not both');
  const name = config.FCM_SERVICE_ACCOUNT_FILE ? 'FCM_SERVICE_ACCOUNT_FILE' : 'FCM_SERVICE_ACCOUNT_JSON';
  const text = config.FCM_SERVICE_ACCOUNT_FILE ? read(name, config.FCM_SERVICE_ACCOUNT_FILE, readFile) : config.FCM_SERVICE_ACCOUNT_JSON;
  if (text === undefined) return undefined;
  try {
    return new FcmPushProvider({ account: parseServiceAccount(text), apiUrl: config.FCM_API_URL, timeoutMs: config.PUSH_TIMEOUT_MS });
  } catch (error) {
    throw new ConfigError(`${name}: ${(error as Error).message}`);
  }
}

function apns(config: PushProviderConfig, readFile: ReadFile): PushProvider | undefined {
  const settings = ['APNS_KEY_ID', 'APNS_TEAM_ID', 'APNS_TOPIC'] as const;
  const keyGiven = Boolean(config.APNS_KEY || config.APNS_KEY_FILE);
  if (!keyGiven && settings.every((name) => !config[name])) return undefined;
  // Half a configuration is a mistake to report now, not a platform to leave quietly poll-only.
  const missing = [...(keyGiven ? [] : ['APNS_KEY_FILE (or APNS_KEY)']), ...settings.filter((name) => !config[name])];
  if (missing.length > 0) throw new ConfigError(`APNs needs ${missing.join(', ')} as well`);
  if (config.APNS_KEY && config.APNS_KEY_FILE) throw new ConfigError('set APNS_KEY_FILE or APNS_KEY, not both');
  const name = config.APNS_KEY_FILE ? 'APNS_KEY_FILE' : 'APNS_KEY';
  // An environment variable often carries a PEM's line breaks as \n.
  const pem = config.APNS_KEY_FILE ? read(name, config.APNS_KEY_FILE, readFile) : config.APNS_KEY!.replace(/\\n/g, '\n');
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new ConfigError(`${name}: not a PEM private key (the .p8 file from the Apple developer account)`);
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new ConfigError(`${name}: an APNs key is ECDSA P-256 (ES256)`);
  return new ApnsPushProvider({
    url: config.APNS_URL,
    key,
    keyId: config.APNS_KEY_ID!,
    teamId: config.APNS_TEAM_ID!,
    topic: config.APNS_TOPIC!,
    ca: config.APNS_CA_FILE ? read('APNS_CA_FILE', config.APNS_CA_FILE, readFile) : undefined,
    timeoutMs: config.PUSH_TIMEOUT_MS,
  });
}

/**
 * The push providers whose settings are given: FCM for Android, APNs for iOS. A platform without
 * one is poll-only (its apps find sign-ins by polling the device API), in production too: push is
 * a convenience on top of polling, not the only way in. Fails at boot on settings that could only
 * fail later: half an APNs configuration, an unreadable key file, a key of the wrong kind.
 */
export function createPushProviders(config: PushProviderConfig, readFile: ReadFile = readText): PushProvider[] {
  return [fcm(config, readFile), apns(config, readFile)].filter((p): p is PushProvider => p !== undefined);
}
