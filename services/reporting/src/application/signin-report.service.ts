import { notFound, type SigninsQueryReply, type SigninsQueryRequest } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import type { SigninsRepository } from '../adapters/signins.repository.js';
import { signinCursors, toPage } from '../domain/signin-report.js';
import type { PersonalDataReader } from './personal-data.reader.js';

/** `reports.signins.query`: one keyset page of a tenant's sign-in report, its personal data opened. */
export class SigninReportService {
  constructor(
    private readonly repository: SigninsRepository,
    private readonly personalData: Pick<PersonalDataReader, 'open'>,
  ) {}

  /**
   * `now` decides which pending challenges have expired (and are reported as failures); `keyring`
   * authenticates the cursors, which are issued for one tenant and refused for any other.
   */
  async query(request: SigninsQueryRequest, now: Date, keyring: Keyring): Promise<SigninsQueryReply> {
    const cursors = signinCursors(keyring, request.tenantId);
    const after = request.cursor === undefined ? undefined : cursors.decode(request.cursor);
    if (!(await this.repository.tenantExists(request.tenantId))) throw notFound('unknown tenant');
    const rows = await this.repository.findSignins({
      tenantId: request.tenantId,
      userId: request.userId,
      from: request.from,
      to: request.to,
      result: request.result,
      after,
      now,
      // One more than asked: tells whether a next page may exist without counting.
      limit: request.limit + 1,
    });
    return toPage(await this.personalData.open(request.tenantId, rows), request.limit, cursors);
  }
}
