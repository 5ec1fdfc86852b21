import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import type { ConsumerDefinition, StreamDefinition } from '@mfa/contracts';
import { isStreamNameInUse, isStreamOrConsumerNotFound } from './jetstream-errors.js';

const nanos = (seconds: number) => seconds * 1_000_000_000;


/** Creates the stream if missing, or brings its subjects and limits up to date. Idempotent. */
export async function ensureStream(jsm: JetStreamManager, def: StreamDefinition, replicas = 1): Promise<void> {
  const config: Partial<StreamConfig> & { name: string } = {
    name: def.name,
    description: def.description,
    subjects: [...def.subjects],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(def.maxAgeSeconds),
    duplicate_window: nanos(def.duplicateWindowSeconds),
    allow_direct: true,
    num_replicas: replicas,
    max_msgs_per_subject: def.maxMsgsPerSubject ?? -1,
  };
  try {
    const info = await jsm.streams.info(def.name);
    const current = info.config;
    const same =
      JSON.stringify([...current.subjects].sort()) === JSON.stringify([...def.subjects].sort()) &&
      current.max_age === config.max_age &&
      current.duplicate_window === config.duplicate_window &&
      current.max_msgs_per_subject === config.max_msgs_per_subject &&
      current.allow_direct === true;
    if (!same) await jsm.streams.update(def.name, { ...current, ...config });
  } catch (error) {
    if (!isStreamOrConsumerNotFound(error)) throw error;
    try {
      await jsm.streams.add(config);
    } catch (addError) {
      // Another instance created it between our info and add: fine.
      if (!isStreamNameInUse(addError)) throw addError;
    }
  }
}

/** ensureStream for each stream a service writes to or reads from, in order. */
export async function ensureStreams(jsm: JetStreamManager, defs: readonly StreamDefinition[], replicas = 1): Promise<void> {
  for (const def of defs) await ensureStream(jsm, def, replicas);
}

/** Creates the durable pull consumer if missing, or updates what may change. Idempotent. */
export async function ensureConsumer(jsm: JetStreamManager, def: ConsumerDefinition, maxAckPending = 1000): Promise<void> {
  const config = {
    durable_name: def.durable,
    description: def.description,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: def.filterSubject === '>' ? undefined : def.filterSubject,
    // Unlimited on the server: the consumer runner dead-letters poison itself (after
    // def.maxDeliver failures that are not outages), and an outage must not exhaust deliveries.
    max_deliver: -1,
    ack_wait: nanos(def.ackWaitSeconds),
    max_ack_pending: maxAckPending,
  };
  try {
    const info = await jsm.consumers.info(def.stream, def.durable);
    const c = info.config;
    if (c.max_deliver !== config.max_deliver || c.ack_wait !== config.ack_wait || c.max_ack_pending !== maxAckPending) {
      await jsm.consumers.update(def.stream, def.durable, {
        description: def.description,
        max_deliver: config.max_deliver,
        ack_wait: config.ack_wait,
        max_ack_pending: maxAckPending,
      });
    }
  } catch (error) {
    if (!isStreamOrConsumerNotFound(error)) throw error;
    await jsm.consumers.add(def.stream, config);
  }
}
