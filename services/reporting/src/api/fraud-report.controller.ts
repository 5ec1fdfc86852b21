import { Inject } from '@nestjs/common';
import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import {
  BlockedQueryRequest,
  Consumers,
  FraudQueryRequest,
  Subjects,
  UsageQueryRequest,
  type BlockedQueryReply,
  type EventOf,
  type FraudQueryReply,
  type UsageQueryReply,
} from '@mfa/contracts';
import { PoisonMessageError, type Delivery } from '@mfa/messaging';
import { ContractPipe, JetStreamConsumer, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { FraudReportService } from '../application/fraud-report.service.js';
import type { FraudStreamEvent } from '../domain/fraud-projection.js';

const FRAUD_EVENTS = new Set<string>([
  'UserBlocked',
  'UserUnblocked',
  'FraudReported',
  'IpLocked',
  'IpUnlocked',
  'FraudNotificationSent',
  'FraudNotificationFailed',
] satisfies FraudStreamEvent['type'][]);

/** The fraud and usage reports: their durable projections and their queries. */
@NatsController()
export class FraudReportController {
  constructor(@Inject(FraudReportService) private readonly reports: FraudReportService) {}

  @JetStreamConsumer(Consumers.reportingFraud, { batchSize: 500, maxWaitMs: 50 })
  projectFraud(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.reports.project(
      deliveries.map(({ event, msg }) => {
        if (!FRAUD_EVENTS.has(event.type)) throw new PoisonMessageError(`unexpected ${event.type} event on ${msg.subject}`);
        return { event: event as FraudStreamEvent, seq: msg.info.streamSequence };
      }),
    );
  }

  /** Every user event passes here; registrations and erasures make the users' lifetimes. */
  @JetStreamConsumer(Consumers.reportingUsers, { batchSize: 500, maxWaitMs: 50 })
  projectUsers(@Payload() deliveries: Delivery[]): Promise<void> {
    return this.reports.projectUsers(
      deliveries.flatMap(({ event, msg }) =>
        event.type === 'UserRegistered' || event.type === 'UserErased'
          ? [{ event: event as EventOf<'UserRegistered' | 'UserErased'>, seq: msg.info.streamSequence }]
          : [],
      ),
    );
  }

  @MessagePattern(Subjects.reportsFraudQuery)
  fraud(@Payload(new ContractPipe(FraudQueryRequest)) request: FraudQueryRequest): Promise<FraudQueryReply> {
    return this.reports.fraud(request);
  }

  @MessagePattern(Subjects.reportsBlockedQuery)
  blocked(@Payload(new ContractPipe(BlockedQueryRequest)) request: BlockedQueryRequest): Promise<BlockedQueryReply> {
    return this.reports.blocked(request);
  }

  @MessagePattern(Subjects.reportsUsageQuery)
  usage(@Payload(new ContractPipe(UsageQueryRequest)) request: UsageQueryRequest, @Ctx() ctx: NatsRequestContext): Promise<UsageQueryReply> {
    return this.reports.usageReport(request, ctx.receivedAt);
  }
}
