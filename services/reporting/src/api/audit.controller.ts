import { Inject } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import { AuditQueryRequest, Consumers, Subjects, type AuditQueryReply, type EventOf } from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { ContractPipe, JetStreamConsumer, NatsController } from '@mfa/service-kit';
import { AuditReportService } from '../application/audit-report.service.js';

/** The admin audit trail: its durable projection and `reports.audit.query`. */
@NatsController()
export class AuditController {
  constructor(@Inject(AuditReportService) private readonly audit: AuditReportService) {}

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
    return this.audit.query(request);
  }
}
