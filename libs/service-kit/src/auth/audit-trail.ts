import { Inject, Injectable } from '@nestjs/common';
import { EventSubjects, SubjectScopes, TenantId, UserId, type ApiSubject, type Operator } from '@mfa/contracts';
import { createEvent, EventPublisher, publishWithRetry } from '@mfa/messaging';
import { counter, type Logger } from '@mfa/telemetry';
import type { NatsRequestContext } from '../nats/context.js';
import { LOGGER } from '../tokens.js';

const failures = counter('mfa_audit_write_failures_total', 'Admin actions whose audit event could not be written', ['subject']);

/** Subjects that only read (`.get`, `.list`, `.query`, `.status`): nothing of a tenant changes by them. */
const READ_ONLY = /\.(?:get|list|query|status)$/;

/**
 * The admin audit trail: every request to a subject of the `admin` scope, and every change that
 * names an operator (the console, acting for a person: also on `users` subjects, where an operator
 * can enrol a code app, set a PIN or change a phone number for someone), answered or refused after
 * the caller was identified, becomes an AdminActionRecorded event (MFA_AUDIT) naming the acting
 * client, the operator, the target user and the outcome. Reporting projects it for
 * reports.audit.query. Written before the reply is sent.
 */
@Injectable()
export class AuditTrail {
  constructor(
    @Inject(EventPublisher) private readonly publisher: EventPublisher,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  /**
   * Whether a request is audited: one to an `admin` subject, whoever sends it, and a change that
   * names an operator, which only the platform key may (ApiKeyGuard): a person at the console,
   * whose changes to a user's methods are theirs to answer for (the pages they read are not
   * recorded, or they would bury the changes). An IdP's requests to `users` and `challenge`
   * subjects name no operator, and are not (the hot path stays one publish).
   */
  covers(subject: string, operator?: Operator): boolean {
    return SubjectScopes[subject as ApiSubject] === 'admin' || (operator !== undefined && !READ_ONLY.test(subject));
  }

  async record(ctx: NatsRequestContext, body: Record<string, unknown> | undefined, outcome: string): Promise<void> {
    const principal = ctx.principal;
    // A tenant's key is recorded in its own tenant's trail, also when it named another tenant.
    const tenant = TenantId.safeParse(principal?.tenantId ?? body?.tenantId);
    // Without an identified caller or a valid tenant there is nothing to attribute the action to;
    // such requests were refused and counted (mfa_auth_refusals_total) before any work.
    if (!principal || !tenant.success) return;
    const userId = auditedUserId(body?.userId);
    const event = createEvent('AdminActionRecorded', 1, {
      tenantId: tenant.data,
      aggregateId: tenant.data,
      now: ctx.receivedAt,
      data: {
        subject: ctx.subject,
        clientId: principal.clientId,
        ...(ctx.operator ? { operator: ctx.operator } : {}),
        ...(userId !== undefined ? { userId } : {}),
        outcome,
      },
    });
    try {
      await publishWithRetry(this.publisher, EventSubjects.audit(tenant.data), event, { attempts: 3, delayMs: 100 });
    } catch (error) {
      failures.inc({ subject: ctx.subject });
      this.log.error('audit event not written', { subject: ctx.subject, tenantId: tenant.data, clientId: principal.clientId, error });
    }
  }
}

/**
 * The target user as the trail records it: a valid user id as sent; any other string (a refused
 * request's, which any caller with a key can send) with its control, format and separator
 * characters written as \u escapes, so that the report stores it (Postgres refuses NUL in text)
 * and shows it without a bidi override or a terminal escape taking effect.
 */
export function auditedUserId(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return undefined;
  if (UserId.safeParse(value).success) return value;
  const escaped = value.replace(/[\p{C}\u2028\u2029]/gu, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`);
  return escaped.slice(0, 256);
}
