import { DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type ConsumerMessages, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { provision } from './topology.js';

/**
 * Follows every message of `filter` in `stream`, from the start and then live, through an ordered
 * (ephemeral) consumer: for state each instance keeps whole in its own memory (tenant settings, API
 * clients), where a durable consumer would share the messages among instances. Resolves once the
 * messages present at the start have been handed to `onMessage` (or after `timeoutMs`); the
 * returned subscription keeps delivering until closed. `onCaughtUp` is called once those messages
 * are in, however long that takes: what a cache that must not answer from partial state waits for.
 * `lastPerSubject`: only the last message of each subject, then live (aggregates whose every event
 * carries their whole state).
 */
export async function followSubjects(
  js: JetStreamClient,
  stream: string,
  filter: string,
  onMessage: (msg: JsMsg) => void,
  timeoutMs = 10_000,
  onCaughtUp: () => void = () => undefined,
  options: { lastPerSubject?: boolean } = {},
): Promise<ConsumerMessages> {
  // At boot on a new cluster JetStream may not answer yet: tried again as provisioning calls are.
  const { consumer, info } = await provision(`following ${filter} on ${stream}`, async () => {
    const ordered = await js.consumers.get(stream, {
      filter_subjects: filter,
      ...(options.lastPerSubject ? { deliver_policy: DeliverPolicy.LastPerSubject } : {}),
    });
    return { consumer: ordered, info: await ordered.info() };
  });
  let caughtUp: () => void = () => undefined;
  let told = false;
  const ready = new Promise<void>((resolve) => {
    caughtUp = () => {
      resolve();
      if (!told) {
        told = true;
        onCaughtUp();
      }
    };
    if (info.num_pending === 0) caughtUp();
  });
  const messages = await consumer.consume({
    callback: (msg) => {
      onMessage(msg);
      if (msg.info.pending === 0) caughtUp();
    },
  });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ready, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
  clearTimeout(timer);
  return messages;
}

/**
 * Reads the messages of `filter` that are in `stream` now, through an ordered consumer, and stops:
 * for one-off passes over the log such as a rebuild. `deliver` chooses where to start (every
 * message, the last one of each subject, or from a time); `headersOnly` leaves bodies on the
 * server when the subjects are all that is needed. Resolves with the number of messages read; a
 * stream that does not exist yet holds none.
 */
export async function readOnce(
  js: JetStreamClient,
  stream: string,
  filter: string,
  deliver: { policy: 'all' } | { policy: 'last_per_subject' } | { policy: 'since'; time: Date },
  onMessage: (msg: JsMsg) => void | Promise<void>,
  options: { headersOnly?: boolean } = {},
): Promise<number> {
  const consumer = await js.consumers
    .get(stream, {
    filter_subjects: filter,
    ...(deliver.policy === 'all' ? {} : deliver.policy === 'last_per_subject'
      ? { deliver_policy: DeliverPolicy.LastPerSubject }
      : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: deliver.time.toISOString() }),
    ...(options.headersOnly ? { headers_only: true } : {}),
  })
    .catch((error: unknown) => {
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
      throw error;
    });
  if (!consumer || (await consumer.info()).num_pending === 0) return 0;
  let read = 0;
  const messages = await consumer.consume();
  try {
    for await (const msg of messages) {
      await onMessage(msg);
      read++;
      if (msg.info.pending === 0) break;
    }
  } finally {
    messages.stop();
  }
  return read;
}
