import type { ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream';

/**
 * Follows every message of `filter` in `stream`, from the start and then live, through an ordered
 * (ephemeral) consumer: for state each instance keeps whole in its own memory (tenant settings, API
 * clients), where a durable consumer would share the messages among instances. Resolves once the
 * messages present at the start have been handed to `onMessage` (or after `timeoutMs`); the
 * returned subscription keeps delivering until closed.
 */
export async function followSubjects(
  js: JetStreamClient,
  stream: string,
  filter: string,
  onMessage: (msg: JsMsg) => void,
  timeoutMs = 10_000,
): Promise<ConsumerMessages> {
  const consumer = await js.consumers.get(stream, { filter_subjects: filter });
  const info = await consumer.info();
  let caughtUp: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => {
    caughtUp = resolve;
    if (info.num_pending === 0) resolve();
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
