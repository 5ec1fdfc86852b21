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
import { isReplicasUnavailable, isStreamNameInUse, isStreamOrConsumerNotFound, isTransientJetStreamError } from './jetstream-errors.js';

const nanos = (seconds: number) => seconds * 1_000_000_000;

/** How long a boot keeps trying a provisioning call that timed out or met an election. */
export const PROVISIONING_PATIENCE_MS = 60_000;

/**
 * Runs an idempotent provisioning call (create or update a stream, a consumer, a bucket) again
 * while JetStream cannot answer it yet: a request that timed out, or a cluster electing its
 * leaders. A new cluster's meta leader answers slowly while it places replicated streams, and
 * nats-server 2.9 may leave unanswered the second of two instances creating the same stream at
 * once. What the call is refused for (a wrong configuration, too few servers for the replicas
 * asked) is thrown at once. After `patienceMs` the last error is thrown, saying what was tried.
 */
export async function provision<T>(what: string, call: () => Promise<T>, patienceMs = PROVISIONING_PATIENCE_MS): Promise<T> {
  const deadline = Date.now() + patienceMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const retryable = (error as Error)?.name === 'TimeoutError' || (isTransientJetStreamError(error) && !isReplicasUnavailable(error));
      if (!retryable) throw error;
      if (Date.now() >= deadline) throw new Error(`${what}: JetStream did not answer within ${patienceMs} ms (${(error as Error)?.message ?? String(error)})`, { cause: error });
      await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
    }
  }
}


/** The boot stops, naming the variable, when the cluster cannot give a stream its replicas. */
function replicasError(stream: string, replicas: number, error: unknown): Error {
  return new Error(`STREAM_REPLICAS=${replicas}: stream ${stream} cannot get ${replicas} replicas (JetStream servers in the cluster: fewer than that, or out of resources): ${(error as Error)?.message ?? String(error)}`, { cause: error });
}

/**
 * Gives an existing stream (a service's own, or the one under a key-value or object store bucket:
 * `KV_<bucket>`, `OBJ_<bucket>`) at least `replicas` replicas: a stream created before the
 * operator raised STREAM_REPLICAS is scaled up in place (the servers copy its data); one with
 * more replicas is left alone (lowering is an operator's decision).
 */
export function ensureReplicas(jsm: JetStreamManager, stream: string, replicas: number): Promise<void> {
  return provision(`giving stream ${stream} ${replicas} replicas`, () => scaleUp(jsm, stream, replicas));
}

async function scaleUp(jsm: JetStreamManager, stream: string, replicas: number): Promise<void> {
  const info = await jsm.streams.info(stream);
  if (info.config.num_replicas >= replicas) return;
  // A server outside a cluster (no `cluster` in the stream's info) accepts the update without
  // replicating anything (nats-server 2.9): refuse instead of pretending.
  if (info.cluster === undefined) throw replicasError(stream, replicas, new Error('the server is not part of a JetStream cluster'));
  try {
    await jsm.streams.update(stream, { ...info.config, num_replicas: replicas });
  } catch (error) {
    throw replicasError(stream, replicas, error);
  }
}

/** Creates the stream if missing, or brings its subjects, limits and replicas up to date. Idempotent. */
export function ensureStream(jsm: JetStreamManager, def: StreamDefinition, replicas = 1): Promise<void> {
  return provision(`provisioning stream ${def.name}`, () => createOrUpdateStream(jsm, def, replicas));
}

async function createOrUpdateStream(jsm: JetStreamManager, def: StreamDefinition, replicas: number): Promise<void> {
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
    // Replicas first: a cluster that cannot give them stops the boot before anything else changes.
    if (current.num_replicas < replicas) await scaleUp(jsm, def.name, replicas);
    if (!same) await jsm.streams.update(def.name, { ...current, ...config, num_replicas: Math.max(current.num_replicas, replicas) });
  } catch (error) {
    if (!isStreamOrConsumerNotFound(error)) throw error;
    try {
      await jsm.streams.add(config);
    } catch (addError) {
      // Another instance created it between our info and add: fine.
      if (isStreamNameInUse(addError)) return;
      if (replicas > 1 && isReplicasUnavailable(addError)) throw replicasError(def.name, replicas, addError);
      throw addError;
    }
  }
}

/** ensureStream for each stream a service writes to or reads from, in order. */
export async function ensureStreams(jsm: JetStreamManager, defs: readonly StreamDefinition[], replicas = 1): Promise<void> {
  for (const def of defs) await ensureStream(jsm, def, replicas);
}

/** Creates the durable pull consumer if missing, or updates what may change. Idempotent. */
export function ensureConsumer(jsm: JetStreamManager, def: ConsumerDefinition, maxAckPending = 1000): Promise<void> {
  return provision(`provisioning consumer ${def.durable} on ${def.stream}`, () => createOrUpdateConsumer(jsm, def, maxAckPending));
}

async function createOrUpdateConsumer(jsm: JetStreamManager, def: ConsumerDefinition, maxAckPending: number): Promise<void> {
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
