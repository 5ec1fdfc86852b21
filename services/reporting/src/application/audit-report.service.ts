import type { AuditQueryReply, AuditQueryRequest, EventOf } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import type { AuditRepository } from '../adapters/audit.repository.js';
import { auditCursors, toAuditPage } from '../domain/audit-report.js';
import type { Sequenced } from '../domain/signin-projection.js';
import type { Pseudonymizer } from './pseudonyms.js';

/** The admin audit trail: projected from MFA_AUDIT, read by `reports.audit.query`. */
export class AuditReportService {
  constructor(
    private readonly repository: AuditRepository,
    private readonly pseudonymOf: Pseudonymizer,
  ) {}

  project(items: readonly Sequenced<EventOf<'AdminActionRecorded'>>[]): Promise<void> {
    return this.repository.append(items, this.pseudonymOf);
  }

  /**
   * A tenant without audited actions has an empty trail: whether it exists is not told here.
   * `keyring` authenticates the cursors, which are issued for one tenant and refused for any other.
   */
  async query(request: AuditQueryRequest, keyring: Keyring): Promise<AuditQueryReply> {
    const cursors = auditCursors(keyring, request.tenantId);
    const after = request.cursor === undefined ? undefined : cursors.decode(request.cursor);
    const rows = await this.repository.find({
      tenantId: request.tenantId,
      clientId: request.clientId,
      userId: request.userId,
      operator: request.operator,
      subject: request.subject,
      from: request.from,
      to: request.to,
      after,
      limit: request.limit + 1,
    });
    return toAuditPage(rows, request.limit, cursors);
  }
}
