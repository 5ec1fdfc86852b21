import { accessSync, constants, readFileSync } from 'node:fs';
import { credsAuthenticator, type ConnectionOptions } from '@nats-io/nats-core';
import { isReplySubject } from './reply-subject.js';

/**
 * How a process proves who it is to NATS and protects the connection: the NATS_* variables of
 * docs/operations.md ("NATS credentials and permissions"). The services read them through their
 * validated configuration, the clients outside them (demo, bench, tests) from the environment.
 */
export interface NatsSecurity {
  /** At most one of user/password, token and creds file. */
  user?: { name: string; password: string };
  token?: string;
  /** A .creds file (user JWT and nkey seed), read again at every (re)connect so it can be rotated. */
  credsFile?: string;
  /** PEM files; any of them makes TLS required. A client certificate needs its key. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** Prefix of this connection's reply subjects, e.g. `_INBOX_<idp>` where permissions name one. */
  inboxPrefix?: string;
}

export const NATS_SECURITY_VARIABLES = [
  'NATS_USER',
  'NATS_PASSWORD',
  'NATS_TOKEN',
  'NATS_CREDS',
  'NATS_TLS_CA',
  'NATS_TLS_CERT',
  'NATS_TLS_KEY',
  'NATS_INBOX_PREFIX',
] as const;

export type NatsSecurityEnv = Partial<Record<(typeof NATS_SECURITY_VARIABLES)[number], string | undefined>>;

// Tokens without wildcards or white space; the prefix may not end with a dot (the client adds one).
const SUBJECT_PREFIX = /^[^.\s*>]+(\.[^.\s*>]+)*$/;


/** Compose passes unset variables as empty strings: both mean "not set". */
const setting = (value: string | undefined): string | undefined => (value === undefined || value === '' ? undefined : value);

const isCredsFile = (text: string): boolean => /-+BEGIN NATS USER JWT-+/.test(text) && /-+BEGIN USER NKEY SEED-+/.test(text);

function unreadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return false;
  } catch {
    return true;
  }
}

/**
 * Reads the NATS_* settings and lists what is wrong with them, naming the variable and never its
 * value. Files must be readable now, so a typo stops the process at boot instead of at connect.
 */
export function readNatsSecurity(env: NatsSecurityEnv): { security: NatsSecurity; problems: string[] } {
  const user = setting(env.NATS_USER);
  const password = setting(env.NATS_PASSWORD);
  const token = setting(env.NATS_TOKEN);
  const credsFile = setting(env.NATS_CREDS);
  const caFile = setting(env.NATS_TLS_CA);
  const certFile = setting(env.NATS_TLS_CERT);
  const keyFile = setting(env.NATS_TLS_KEY);
  const inboxPrefix = setting(env.NATS_INBOX_PREFIX);
  const problems: string[] = [];

  if (user !== undefined && password === undefined) problems.push('NATS_PASSWORD: required with NATS_USER');
  if (password !== undefined && user === undefined) problems.push('NATS_USER: required with NATS_PASSWORD');
  const methods = [user !== undefined || password !== undefined ? 'NATS_USER/NATS_PASSWORD' : '', token ? 'NATS_TOKEN' : '', credsFile ? 'NATS_CREDS' : ''].filter(Boolean);
  if (methods.length > 1) problems.push(`${methods.join(', ')}: set only one way of authenticating`);

  if (credsFile !== undefined) {
    if (unreadable(credsFile)) problems.push('NATS_CREDS: file not readable');
    else if (!isCredsFile(readFileSync(credsFile, 'utf8'))) problems.push('NATS_CREDS: not a .creds file (a user JWT and an nkey seed)');
  }
  for (const [name, file] of [['NATS_TLS_CA', caFile], ['NATS_TLS_CERT', certFile], ['NATS_TLS_KEY', keyFile]] as const) {
    if (file !== undefined && unreadable(file)) problems.push(`${name}: file not readable`);
  }
  if (certFile !== undefined && keyFile === undefined) problems.push('NATS_TLS_KEY: required with NATS_TLS_CERT');
  if (keyFile !== undefined && certFile === undefined) problems.push('NATS_TLS_CERT: required with NATS_TLS_KEY');
  // The inboxes made with it must be reply subjects the services answer (reply-subject.ts).
  if (inboxPrefix !== undefined && !(SUBJECT_PREFIX.test(inboxPrefix) && inboxPrefix.startsWith('_INBOX') && isReplySubject(`${inboxPrefix}.x`))) {
    problems.push(
      'NATS_INBOX_PREFIX: must be _INBOX or _INBOX_<name>, optionally followed by more subject tokens (the services answer no other reply subjects), with no wildcards, spaces or trailing dot',
    );
  }

  const security: NatsSecurity = {};
  if (user !== undefined && password !== undefined) security.user = { name: user, password };
  if (token !== undefined) security.token = token;
  if (credsFile !== undefined) security.credsFile = credsFile;
  if (caFile !== undefined || certFile !== undefined || keyFile !== undefined) {
    security.tls = {
      ...(caFile !== undefined ? { caFile } : {}),
      ...(certFile !== undefined ? { certFile } : {}),
      ...(keyFile !== undefined ? { keyFile } : {}),
    };
  }
  if (inboxPrefix !== undefined) security.inboxPrefix = inboxPrefix;
  return { security, problems };
}

export class NatsSecurityError extends Error {
  override name = 'NatsSecurityError';
}

/** The NATS_* settings, or a NatsSecurityError listing every problem. */
export function natsSecurityFromEnv(env: NatsSecurityEnv = process.env): NatsSecurity {
  const { security, problems } = readNatsSecurity(env);
  if (problems.length > 0) throw new NatsSecurityError(`invalid NATS settings: ${problems.join('; ')}`);
  return security;
}

/** The nats.js connection options for these settings. */
export function natsSecurityOptions(security: NatsSecurity): Partial<ConnectionOptions> {
  const options: Partial<ConnectionOptions> = {};
  if (security.user) {
    options.user = security.user.name;
    options.pass = security.user.password;
  }
  if (security.token !== undefined) options.token = security.token;
  if (security.credsFile !== undefined) {
    const file = security.credsFile;
    options.authenticator = credsAuthenticator(() => readFileSync(file));
  }
  if (security.tls) options.tls = { ...security.tls };
  if (security.inboxPrefix !== undefined) options.inboxPrefix = security.inboxPrefix;
  return options;
}
