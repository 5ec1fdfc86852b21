import { Inject } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { AuditQueryRequest, Consumers, Subjects, type AuditQueryReply, type EventOf } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import type { Keyring } from '@mfa/crypto';
import { ContractPipe, JetStreamConsumer, KEYRING, NatsController } from '@mfa/service-kit';
import { AuditReportService } from '../application/audit-report.service.js';

/** The admin audit trail: its durable projection and `reports.audit.query`. */
@NatsController()
export class AuditController {
  constructor(
    @Inject(AuditReportService) private readonly audit: AuditReportService,
    /** The service's keyring (runService provides it): it authenticates report cursors. */
    @Inject(KEYRING) private readonly keyring: Keyring,
  ) {}

  @JetStreamConsumer(Consumers.reportingAudit, { batchSize: 500, maxWaitMs: 50 })
  project(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.audit.project(
      deliveries.map(({ event, msg }) => {
        if (event.type !== 'AdminActionRecorded') throw new PoisonMessageError(`unexpected ${event.type} event on ${msg.subject}`);
        return { event: event as EventOf<'AdminActionRecorded'>, seq: msg.info.streamSequence };
      }),
    );
  }

  @MessagePattern(Subjects.reportsAuditQuery)
  query(@Payload(new ContractPipe(AuditQueryRequest)) request: AuditQueryRequest): Promise<AuditQueryReply> {
    return this.audit.query(request, this.keyring);
  }
}
