import { timingSafeEqual } from 'node:crypto';
import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { MsgHdrs } from '@nats-io/nats-core';
import { forbidden, Headers, SCOPES, type Scope } from '@mfa/contracts';
import { apiKeyMatches, internalRequestSigned, parseApiKey, platformKeyMatcher } from '@mfa/crypto';
import { counter } from '@mfa/telemetry';
import { ApiClientDirectory, type ApiClientRecord } from './api-client.directory.js';
import type { AuthConfig } from './auth.config.js';
import { AUTH_OPTIONS, type AuthOptions } from './auth.options.js';


/** Who is calling: an API client of one tenant, the operator's platform key, or nobody (MFA_AUTH=off). */
export interface Principal {
  kind: 'client' | 'platform' | 'anonymous';
  /** The client id; `platform` or `anonymous` for the other kinds. */
  clientId: string;
  /** The only tenant the principal may act on; undefined: every tenant. */
  tenantId: string | undefined;
  scopes: ReadonlySet<Scope>;
}

const refusals = counter('mfa_auth_refusals_total', 'Requests refused before any work, by reason', ['reason']);
const ALL_SCOPES: ReadonlySet<Scope> = new Set(SCOPES);
const ANONYMOUS: Principal = { kind: 'anonymous', clientId: 'anonymous', tenantId: undefined, scopes: ALL_SCOPES };
const PLATFORM: Principal = { kind: 'platform', clientId: 'platform', tenantId: undefined, scopes: ALL_SCOPES };
/** `Bearer <token>`: printable ASCII only, bounded; anything else is refused without a lookup. */
const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/i;

const unsignedInternal = counter(
  'mfa_internal_unsigned_accepted_total',
  'Internal requests answered without a signature (MFA_INTERNAL_UNSIGNED=accept, for a rolling upgrade): 0 once every service signs',
  ['subject'],
);
/** The one message for every bad key: whether a client, tenant or user exists is never told. */
const invalidKey = (reason: string) => {
  refusals.inc({ reason });
  return forbidden('invalid API key');
};

/**
 * Turns the `Authorization` header of a request into a principal (docs/api.md, "Callers, keys and
 * scopes"). No network round trip for a known key: clients are in memory (ApiClientDirectory) and
 * the keyed hash of the presented secret is compared in constant time. The secret that last
 * matched a client's hash is kept in memory, so that an IdP's repeated requests are checked with a
 * constant-time compare against it instead of a new HMAC each.
 */
@Injectable()
export class Authenticator implements OnModuleInit, OnModuleDestroy {
  private readonly isPlatformKey: (presented: string) => boolean;
  /** Per client: the secret that last matched, and the hash it matched (the entry holds while the hash is the same). */
  private readonly verified = new Map<string, { keyHash: Buffer; secret: Buffer }>();
  /** The log line at MFA_INTERNAL_UNSIGNED_UNTIL. */
  private windowCloses: NodeJS.Timeout | undefined;

  constructor(
    @Inject(AUTH_OPTIONS) private readonly options: AuthOptions,
    @Inject(ApiClientDirectory) private readonly directory: ApiClientDirectory,
  ) {
    const { platformKey } = options.auth;
    this.isPlatformKey = platformKey ? platformKeyMatcher(options.keyring, platformKey) : () => false;
    // A revoked key's secret is of no use to keep: dropped (and zeroed) as the revocation is applied.
    directory.onRevoked((clientId) => this.forget(clientId));
  }

  private forget(clientId: string): void {
    this.verified.get(clientId)?.secret.fill(0);
    this.verified.delete(clientId);
  }

  onModuleInit(): void {
    const { acceptUnsignedInternal, acceptUnsignedInternalUntil: until } = this.options.auth;
    if (!acceptUnsignedInternal) return;
    const logger = new Logger('Authenticator');
    const remove = 'remove MFA_INTERNAL_UNSIGNED and MFA_INTERNAL_UNSIGNED_UNTIL';
    const closed = () =>
      logger.warn(`MFA_INTERNAL_UNSIGNED_UNTIL ${new Date(until!).toISOString()} has passed: unsigned internal requests are refused, as with MFA_INTERNAL_UNSIGNED=refuse; ${remove}`);
    if (until === undefined) {
      logger.warn(
        'MFA_INTERNAL_UNSIGNED=accept: unsigned internal requests are answered; remove it once every service runs this release (mfa_internal_unsigned_accepted_total stays 0)',
      );
    } else if (until <= Date.now()) {
      closed();
    } else {
      logger.warn(
        `MFA_INTERNAL_UNSIGNED=accept: unsigned internal requests are answered until ${new Date(until).toISOString()}; ${remove} once every service runs this release (mfa_internal_unsigned_accepted_total stays 0)`,
      );
      // At most 7 days ahead (loadAuthConfig), within setTimeout's range. Each request compares its
      // own time with the bound; this only says when the window closed.
      this.windowCloses = setTimeout(closed, until - Date.now()).unref();
    }
  }

  onModuleDestroy(): void {
    clearTimeout(this.windowCloses);
  }

  get mode(): AuthConfig['mode'] {
    return this.options.auth.mode;
  }

  /**
   * Whether a request on an internal subject (`mfa.int.`) comes from one of the services: signed
   * (`Mfa-Internal`) with the master key over its subject and body, lately (libs/crypto
   * internal-requests.ts). Whatever MFA_AUTH says: the services always hold the key. `now`: the
   * request's arrival, also the clock for MFA_INTERNAL_UNSIGNED_UNTIL.
   */
  isServiceRequest(subject: string, headers: MsgHdrs | undefined, data: Uint8Array, now: number): boolean {
    const values = headers?.values(Headers.internal) ?? [];
    if (values.length === 0 && this.options.auth.acceptUnsignedInternal) {
      // MFA_INTERNAL_UNSIGNED=accept: services of the release before, during a rolling upgrade, and
      // only until MFA_INTERNAL_UNSIGNED_UNTIL; after it, refused as with `refuse`.
      const until = this.options.auth.acceptUnsignedInternalUntil;
      if (until !== undefined && now >= until) return false;
      unsignedInternal.inc({ subject });
      return true;
    }
    return values.length === 1 && internalRequestSigned(this.options.keyring, subject, data, values[0], now);
  }

  /**
   * The caller of a request, or a contract error. Synchronous for every key this instance already
   * holds (the hot path: no promise, no extra turn of the event loop); a promise only when a client
   * created a moment ago elsewhere must be looked up in the log first.
   */
  authenticate(headers: MsgHdrs | undefined, now: number): Principal | Promise<Principal> {
    const values = headers?.values('Authorization') ?? [];
    if (values.length === 0) {
      if (this.options.auth.mode === 'off') return ANONYMOUS;
      refusals.inc({ reason: 'missing' });
      throw forbidden('missing API key: send the header "Authorization: Bearer <api key>"');
    }
    if (values.length > 1) throw invalidKey('repeated');
    const match = BEARER.exec(values[0]!);
    if (!match) throw invalidKey('malformed');
    const token = match[1]!;
    const parsed = parseApiKey(token);
    if (!parsed) {
      if (this.isPlatformKey(token)) return PLATFORM;
      throw invalidKey('unknown');
    }
    const known = this.directory.known(parsed.clientId);
    if (known) return this.principalOf(known, parsed.secret, now);
    return this.directory.find(parsed.clientId).then((client) => this.principalOf(client, parsed.secret, now));
  }

  private principalOf(client: ApiClientRecord | undefined, secret: string, now: number): Principal {
    if (!client || !this.secretMatches(client, secret)) throw invalidKey('unknown');
    if (client.revokedAt !== undefined) {
      // Matched again after the revocation (one read from the log since): not kept either.
      this.forget(client.clientId);
      throw invalidKey('revoked');
    }
    this.directory.markUsed(client.clientId, now);
    return { kind: 'client', clientId: client.clientId, tenantId: client.tenantId, scopes: client.scopeSet };
  }

  private secretMatches(client: ApiClientRecord, secret: string): boolean {
    const presented = Buffer.from(secret, 'latin1');
    const last = this.verified.get(client.clientId);
    if (last && last.keyHash === client.keyHash && last.secret.length === presented.length && timingSafeEqual(last.secret, presented)) return true;
    if (!apiKeyMatches(this.options.keyring, client.clientId, secret, client.keyHash)) return false;
    this.verified.set(client.clientId, { keyHash: client.keyHash, secret: presented });
    return true;
  }
}
