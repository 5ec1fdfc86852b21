import type { Writable } from 'node:stream';
import type { Redis } from 'ioredis';

const kCoalescing = Symbol('mfa.coalescingWrites');

type CoalescingSocket = Writable & { [kCoalescing]?: true };

/**
 * The commands one event-loop turn sends on a Redis connection leave in one write: the first
 * command of a turn corks the connection's socket, and the socket is uncorked once the turn's
 * I/O callbacks have run (setImmediate), which hands Node everything written meanwhile as one
 * `writev`.
 *
 * This is the batching ioredis's auto-pipelining gives, without its cost: auto-pipelining builds a
 * `Pipeline` per turn and connection (a copy of every script and command method, a promise, the
 * replies gathered and handed back on the next tick), and those objects keep the garbage collector
 * busy far beyond their size (docs/performance.md, "Issue 18, ninth part": at 32 requests in flight
 * each young-generation collection found about 5 MB alive and moved it to the old generation,
 * against under 1 MB without them). Here a command is written as ioredis writes it
 * anywhere, and its reply settles it as soon as it is parsed.
 *
 * Every connection the client opens is covered: ioredis makes a new socket on each (re)connect,
 * and it announces each with `connect`.
 */
export function coalesceWrites(redis: Redis): void {
  redis.on('connect', () => corkEachTurn(redis.stream));
}

/** Corks `socket` at its first write of a turn and uncorks it after the turn (once per socket). */
export function corkEachTurn(socket: CoalescingSocket): void {
  if (socket[kCoalescing]) return;
  socket[kCoalescing] = true;
  const write = socket.write;
  let corked = false;
  const uncork = (): void => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: Writable, ...args: Parameters<Writable['write']>): boolean {
    if (!corked) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
    return write.apply(this, args);
  } as Writable['write'];
}

/**
 * Runs a transaction and rejects when Redis refused any of its commands (an error reply inside
 * MULTI, such as OOM, which `exec` hands back beside the others instead of rejecting), or when the
 * transaction did not run at all; `what` names it in that error.
 */
export async function execAll(transaction: { exec(): Promise<Array<[Error | null, unknown]> | null> }, what: string): Promise<Array<[Error | null, unknown]>> {
  const results = await transaction.exec();
  const refused = results?.find(([error]) => error)?.[0];
  if (!results || refused) throw refused ?? new Error(`${what} (transaction aborted)`);
  return results;
}
