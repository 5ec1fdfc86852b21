import type { JetStreamClient, JsMsg } from '@nats-io/jetstream';
import { Streams } from '@mfa/contracts';
import { readOnce } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';

/**
 * The last message of every subject of MFA_USER_SETTINGS that `filter` matches (one aggregate
 * each: a user, a hardware token), handed to `work` with at most `parallel` of them at work at once:
 * enough to hide the round trips, few enough for a shared NATS and Redis. The first failure stops
 * the read and is thrown once the work under way is done.
 */
export async function eachAggregate(
  js: JetStreamClient,
  filter: string,
  work: (msg: JsMsg) => Promise<void>,
  options: { parallel: number; headersOnly?: boolean; log?: Logger },
): Promise<void> {
  const running = new Set<Promise<void>>();
  let failed: { error: unknown } | undefined;
  await readOnce(
    js,
    Streams.userSettings.name,
    filter,
    { policy: 'last_per_subject' },
    async (msg) => {
      if (failed) throw failed.error;
      const job: Promise<void> = work(msg)
        .catch((error: unknown) => {
          failed ??= { error };
        })
        .finally(() => running.delete(job));
      running.add(job);
      if (running.size >= options.parallel) await Promise.race(running);
    },
    { ...(options.headersOnly ? { headersOnly: true } : {}), ...(options.log ? { log: options.log } : {}) },
  );
  await Promise.all(running);
  if (failed) throw failed.error;
}
