import { Inject, Injectable, Optional, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { forbidden, Headers, invalidRequest, Operator, scopeAllows, SubjectScopes, type ApiSubject } from '@mfa/contracts';
import type { RedisClient } from '@mfa/projection';
import { counter } from '@mfa/telemetry';
import { NatsRequestContext } from '../nats/context.js';
import { REDIS } from '../tokens.js';
import { Authenticator, type Principal } from './authenticator.js';
import { InternalReplays } from './internal-replays.js';

const refusals = counter('mfa_auth_scope_refusals_total', 'Authenticated requests refused, by reason', ['reason']);
const PUBLIC_PREFIX = 'mfa.v1.';
const INTERNAL_PREFIX = 'mfa.int.';

/**
 * Authorization of every request, before validation and before any work. A public one: the
 * caller's key (Authenticator), the scope the subject requires (SubjectScopes), and the tenant
 * named in the body, which must be the key's own. An internal one (`mfa.int.`, between the
 * services): its signature with the master key (`Mfa-Internal`), whatever NATS permissions allow,
 * answered once (InternalReplays, in the service's Redis). Event handlers pass. The principal is left on the request context for the audit trail.
 */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly replays: InternalReplays | undefined;

  constructor(
    @Inject(Authenticator) private readonly authenticator: Authenticator,
    // Every service that answers internal subjects holds Redis; reporting, which holds none, answers none.
    @Optional() @Inject(REDIS) redis?: RedisClient,
  ) {
    this.replays = redis ? new InternalReplays(redis) : undefined;
  }

  /** Synchronous unless the key's client must first be looked up (Authenticator.authenticate). */
  canActivate(context: ExecutionContext): boolean | Promise<boolean> {
    if (context.getType() !== 'rpc') return true;
    const rpc = context.switchToRpc();
    const ctx = rpc.getContext<unknown>();
    if (!(ctx instanceof NatsRequestContext)) return true;
    const required = SubjectScopes[ctx.subject as ApiSubject];
    if (required === undefined) {
      if (ctx.subject.startsWith(INTERNAL_PREFIX)) {
        if (!this.authenticator.isServiceRequest(ctx.subject, ctx.headers, ctx.data, ctx.receivedAt.getTime())) {
          refusals.inc({ reason: 'internal' });
          throw forbidden('this subject answers only the services (a valid Mfa-Internal signature)');
        }
        // Unsigned: accepted for a rolling upgrade (MFA_INTERNAL_UNSIGNED=accept), nothing to record.
        const signature = ctx.headers?.get(Headers.internal);
        if (!this.replays || !signature) return true;
        return this.replays.firstUse(signature, ctx.receivedAt.getTime()).then((first) => {
          if (first) return true;
          refusals.inc({ reason: 'internal_replay' });
          throw forbidden('this internal request was answered already (a copy of a signed request)');
        });
      }
      if (!ctx.subject.startsWith(PUBLIC_PREFIX)) return true;
      throw forbidden('this subject is not open to callers');
    }
    const principal = this.authenticator.authenticate(ctx.headers, ctx.receivedAt.getTime());
    const tenantId = (rpc.getData<Record<string, unknown>>() ?? {}).tenantId;
    return principal instanceof Promise
      ? principal.then((p) => this.authorize(ctx, p, required, tenantId))
      : this.authorize(ctx, principal, required, tenantId);
  }

  private authorize(ctx: NatsRequestContext, principal: Principal, required: (typeof SubjectScopes)[ApiSubject], tenantId: unknown): boolean {
    ctx.principal = principal;
    if (!scopeAllows(principal.scopes, required)) {
      refusals.inc({ reason: 'scope' });
      throw forbidden(`this API key lacks the scope "${required}"`);
    }
    // A tenantId that is missing or not a string is left to validation (invalid_request).
    if (principal.tenantId !== undefined && typeof tenantId === 'string' && tenantId !== principal.tenantId) {
      refusals.inc({ reason: 'tenant' });
      throw forbidden('this API key is not valid for that tenant');
    }
    const operator = ctx.headers?.get(Headers.operator);
    if (operator) {
      // With MFA_AUTH=off (development) the caller acts as everyone anyway; the console names its operator there too.
      if (principal.kind !== 'platform' && principal.kind !== 'anonymous') throw forbidden(`only the platform key may name an operator (${Headers.operator})`);
      ctx.operator = parseOperator(operator);
    }
    return true;
  }
}

function parseOperator(header: string): Operator {
  let value: unknown;
  try {
    value = JSON.parse(header);
  } catch {
    throw invalidRequest(`${Headers.operator}: must be a JSON object {sub, email?, name?}`);
  }
  const parsed = Operator.safeParse(value);
  if (!parsed.success) throw invalidRequest(`${Headers.operator}: must be a JSON object {sub, email?, name?}`);
  return parsed.data;
}
