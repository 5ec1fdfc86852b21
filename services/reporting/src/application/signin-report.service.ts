import { notFound, type SigninsQueryReply, type SigninsQueryRequest } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import type { SigninsRepository } from '../adapters/signins.repository.js';
import { signinCursors, toPage } from '../domain/signin-report.js';
import type { PersonalDataReader } from './personal-data.reader.js';

/**
 * How long after its expiry a challenge without an outcome is still left out of the report rather
 * than reported as timed out: an outcome decided before the expiry may reach the log late (its
 * event relayed from auth-challenge's outbox once JetStream is back, within about 15 s). Also how
 * long a row that an outcome wrote before its start was projected is left out at most (another
 * instance's batch, or one retried after a failure, still to commit the start).
 */
export const OUTCOME_GRACE_MS = 60_000;

/** `reports.signins.query`: one keyset page of a tenant's sign-in report, its personal data opened. */
export class SigninReportService {
  constructor(
    private readonly repository: SigninsRepository,
    private readonly personalData: Pick<PersonalDataReader, 'open'>,
  ) {}

  /**
   * `now` decides which pending challenges have expired, OUTCOME_GRACE_MS ago (and are reported as failures); `keyring`
   * authenticates the cursors, which are issued for one tenant and refused for any other.
   */
  async query(request: SigninsQueryRequest, now: Date, keyring: Keyring): Promise<SigninsQueryReply> {
    const cursors = signinCursors(keyring, request.tenantId);
    const after = request.cursor === undefined ? undefined : cursors.decode(request.cursor);
    if (!(await this.repository.tenantExists(request.tenantId))) throw notFound('unknown tenant');
    const rows = await this.repository.findSignins({
      tenantId: request.tenantId,
      userId: request.userId,
      challengeId: request.challengeId,
      from: request.from,
      to: request.to,
      result: request.result,
      via: request.via,
      after,
      now: new Date(now.getTime() - OUTCOME_GRACE_MS),
      // One more than asked: tells whether a next page may exist without counting.
      limit: request.limit + 1,
    });
    return toPage(await this.personalData.open(request.tenantId, rows), request.limit, cursors);
  }
}
