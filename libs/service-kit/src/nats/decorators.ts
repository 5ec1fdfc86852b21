import { applyDecorators, Controller, UseFilters, UseGuards } from '@nestjs/common';
import { EventPattern } from '@nestjs/microservices';
import type { ConsumerDefinition } from '@mfa/contracts';
import { ApiKeyGuard } from '../auth/api-key.guard.js';
import { ContractErrorFilter } from './contract-error.filter.js';

/**
 * A controller of NATS handlers: `@MessagePattern` requests, authorized by ApiKeyGuard (key, scope,
 * tenant), and `@JetStreamConsumer` events; errors mapped by ContractErrorFilter.
 */
export const NatsController = (): ClassDecorator =>
  applyDecorators(Controller(), UseGuards(ApiKeyGuard), UseFilters(ContractErrorFilter));

export interface JetStreamConsumerOptions {
  /** Largest batch handed to the handler (1 = one message at a time). */
  batchSize?: number;
  /** Batches handled at once, for independent messages such as SMS sends. */
  concurrency?: number;
  /** How long a partial batch may wait for more messages (projections: fewer, larger writes). */
  maxWaitMs?: number;
  /** Unacknowledged messages the server lets this consumer hold (default 1000). */
  maxAckPending?: number;
  /** Acks confirmed by the server, sent again until they are (handlers with an outside effect). */
  confirmAcks?: boolean;
  /** Upper bound of the back-off between redeliveries of a failing message (default 30 s). */
  maxBackoffMs?: number;
}

/** Extras the transport reads off an event handler to run its durable consumer. */
export interface JetStreamConsumerExtras extends JetStreamConsumerOptions {
  consumer: ConsumerDefinition;
}

/**
 * Marks an event handler that a durable JetStream pull consumer feeds. The handler receives the
 * batch (`Delivery[]`, parsed envelopes with their messages); resolving acks it, throwing naks it
 * with back-off (or dead-letters a poison message). The transport creates or updates the
 * durable consumer itself before it starts pulling, so this declaration is its only one.
 */
export const JetStreamConsumer = (consumer: ConsumerDefinition, options: JetStreamConsumerOptions = {}): MethodDecorator =>
  EventPattern(consumer.durable, { consumer, ...options } satisfies JetStreamConsumerExtras);
