import { Cluster, type Redis } from 'ioredis';
import { keySlotOf, type RedisClient } from '@mfa/projection';
import { counter, type Logger } from '@mfa/telemetry';

const unreplicated = counter('mfa_redis_unreplicated_decisions_total', 'Decisions answered before a replica had acknowledged them (WAIT timed out), by script', ['script']);

/** REDIS_WAIT_REPLICAS and REDIS_WAIT_MS: how many replicas must hold a decision before it is answered. */
export interface ReplicatedWritesOptions {
  /** 0: no WAIT (one server, or an operator who accepts the risk). */
  replicas: number;
  timeoutMs: number;
}

type ScriptFn = (...args: Array<string | number | Buffer>) => Promise<string[]>;

interface Queued {
  script: string;
  args: Array<string | number | Buffer>;
  resolve: (reply: string[]) => void;
  reject: (error: unknown) => void;
}

/**
 * Decisions that must survive a Redis failover: an accepted code is never accepted again, even
 * when the master dies right after accepting it and before its replica saw the write (RFC 6238
 * §5.2; MISSION.md part 3). The scripts of one event-loop tick go to their master in one pipeline
 * followed by one `WAIT <replicas> <timeout>`: the replies come back together, once a replica
 * holds every write of the batch, so the caller still makes one round trip (one WAIT covers the
 * whole batch: WAIT waits for the connection's last write). In a cluster there is one such
 * pipeline per master the batch touches.
 *
 * WAIT blocks the connection it is sent on until the replicas answer, so the scripts with WAIT go
 * through a connection of their own (`duplicate()`), never the one starts and reads share. A
 * master with no replica connected gets no WAIT (nothing could be promoted in its place; the
 * master itself coming back empty is the projection rebuild's case), which the writer learns from
 * INFO every second. When WAIT times out the decision is answered anyway (availability: the
 * master is alive and holds it) and counted in `mfa_redis_unreplicated_decisions_total`.
 */
export class ReplicatedWrites {
  private queue: Queued[] = [];
  private readonly scripts = new Map<string, { numberOfKeys: number; lua: string }>();
  private scheduled = false;
  /** Replicas connected to each master ("host:port"; "" for a single master), read every second. */
  private readonly replicasOf = new Map<string, number>();
  private readonly timer: NodeJS.Timeout | undefined;
  private lastWarned = 0;

  constructor(
    private readonly redis: RedisClient,
    private readonly options: ReplicatedWritesOptions,
    private readonly log: Logger,
    /** Whether the connection is this writer's own (closed by stop()), or the service's one. */
    private readonly ownsConnection = false,
  ) {
    if (options.replicas > 0) {
      void this.watchReplicas();
      this.timer = setInterval(() => void this.watchReplicas(), 1_000);
      this.timer.unref();
    }
  }

  /** Defines a script on this writer's connection (as ioredis's defineCommand does on another). */
  define(name: string, definition: { numberOfKeys: number; lua: string }): void {
    this.redis.defineCommand(name, definition);
    this.scripts.set(name, definition);
  }

  /** Whether decisions wait for replicas at all (REDIS_WAIT_REPLICAS > 0). */
  get waiting(): boolean {
    return this.options.replicas > 0;
  }

  /**
   * Runs a script defined with define() (its keys first in `args`), and answers its reply once the
   * replicas hold it. Without WAIT: the script, as it is.
   */
  run(script: string, args: Array<string | number | Buffer>): Promise<string[]> {
    if (!this.waiting) return ((this.redis as unknown as Record<string, ScriptFn>)[script]!).apply(this.redis, args);
    return new Promise((resolve, reject) => {
      this.queue.push({ script, args, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        process.nextTick(() => this.flush());
      }
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    if (this.ownsConnection) await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    this.queue = [];
    for (const [master, items] of this.byMaster(batch)) void this.send(master, items);
  }

  /** The master of each item's keys (all of one script's keys share a slot). */
  private byMaster(batch: Queued[]): Map<string, Queued[]> {
    const groups = new Map<string, Queued[]>();
    for (const item of batch) {
      let master = '';
      if (this.redis instanceof Cluster) master = this.redis.slots[keySlotOf(String(item.args[0]))]?.[0] ?? '';
      groups.set(master, [...(groups.get(master) ?? []), item]);
    }
    return groups;
  }

  private async send(master: string, items: Queued[], attempt = 1, withText = false): Promise<void> {
    const replicas = Math.min(this.options.replicas, this.replicasOf.get(master) ?? this.options.replicas);
    let replies: Array<[Error | null, unknown]>;
    try {
      replies = await this.pipelined(items, replicas, withText);
    } catch (error) {
      for (const item of items) item.reject(error);
      return;
    }
    if (replicas > 0) {
      const [waitError, acked] = replies[items.length] ?? [null, 0];
      if (waitError || Number(acked) < replicas) {
        for (const item of items) unreplicated.inc({ script: item.script });
        if (Date.now() - this.lastWarned > 10_000) {
          this.lastWarned = Date.now();
          this.log.warn('decisions answered before a replica acknowledged them', { master: master || 'master', replicas, acked: Number(acked ?? 0), error: waitError ?? undefined });
        }
      }
    }
    // Answers that say the script did not run, and where to send it instead:
    // - NOSCRIPT: a master that has not seen the script (a replica just promoted: the script cache
    //   is not replicated); it goes again with the script's text.
    // - MOVED, ASK, TRYAGAIN, CLUSTERDOWN: the slot moved or is moving (a failover); the slots are
    //   read again and it goes to the new master, every 100 ms for up to 5 s (the IdP's deadline).
    const again: Queued[] = [];
    let moved = false;
    let noScript = false;
    items.forEach((item, i) => {
      const [error, reply] = replies[i] ?? [new Error('no reply'), undefined];
      const message = error?.message ?? '';
      if (/^NOSCRIPT/.test(message) && !withText) {
        noScript = true;
        again.push(item);
      } else if (/^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)/.test(message) && attempt < 50) {
        moved = true;
        again.push(item);
      } else if (error) item.reject(error);
      else item.resolve(reply as string[]);
    });
    if (again.length === 0) return;
    if (moved && this.redis instanceof Cluster) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      await new Promise<void>((resolve) => (this.redis as Cluster).refreshSlotsCache(() => resolve()));
    }
    for (const [next, group] of this.byMaster(again)) void this.send(next, group, attempt + 1, noScript && !moved);
  }

  /** One pipeline: the items' scripts (by SHA, or by text with `withText`), then WAIT when asked. */
  private async pipelined(items: Queued[], replicas: number, withText: boolean): Promise<Array<[Error | null, unknown]>> {
    const pipeline = this.redis.pipeline();
    const commands = pipeline as unknown as Record<string, (...args: Array<string | number | Buffer>) => unknown>;
    for (const item of items) {
      const script = this.scripts.get(item.script);
      if (withText && script) pipeline.eval(script.lua, script.numberOfKeys, ...item.args);
      else commands[item.script]!.apply(pipeline, item.args);
    }
    if (replicas > 0) pipeline.wait(replicas, this.options.timeoutMs);
    return ((await pipeline.exec()) ?? []) as Array<[Error | null, unknown]>;
  }

  /** connected_slaves of each master, from INFO replication. */
  private async watchReplicas(): Promise<void> {
    try {
      const masters: Array<[string, Redis]> =
        this.redis instanceof Cluster
          ? this.redis.nodes('master').map((node) => [`${node.options.host}:${node.options.port}`, node])
          : [['', this.redis]];
      await Promise.all(
        masters.map(async ([key, node]) => {
          const info = await node.info('replication');
          this.replicasOf.set(key, Number(/^connected_slaves:(\d+)/m.exec(info)?.[1] ?? 0));
        }),
      );
    } catch {
      // Redis unreachable: the last figures stand; the decisions fail on their own.
    }
  }
}
