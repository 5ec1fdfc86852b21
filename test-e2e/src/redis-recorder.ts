import { createHash } from 'node:crypto';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'ioredis';
import type { RedisClient } from '@mfa/projection';

/** A Redis script as the product defines it (defineCommand, ReplicatedWrites.define) or runs it (EVAL of a text). */
export interface RecordedScript {
  /** The defineCommand name, or `eval <sha1, 8 hex>` for a text run with EVAL. */
  name: string;
  sha: string;
  /** Undefined for a command defined without it: its first argument says how many keys follow. */
  numberOfKeys: number | undefined;
  via: 'defineCommand' | 'ReplicatedWrites.define' | 'eval';
  /** The product file that defined it (or ran the EVAL), as `services/…/src/….ts`; undefined when none is on the stack. */
  source: string | undefined;
  /** The connection it was defined on (the recorder's label). */
  client: string;
}

/** One command or script an adapter issued, on the connection, in a pipeline or in a MULTI. */
export interface RecordedCall {
  client: string;
  /** The command (lower case as called) or the script's name. */
  name: string;
  /** Set for a script. */
  script?: string;
  keys: string[];
  batch?: 'pipeline' | 'multi';
  /** Every product file on the stack when the adapter issued it, innermost first. */
  sources: string[];
  outcome: 'pending' | 'ok' | 'error';
  error?: string;
}

export interface RecordedBatch {
  client: string;
  kind: 'pipeline' | 'multi';
  calls: RecordedCall[];
  sources: string[];
  outcome: 'pending' | 'ok' | 'error';
  error?: string;
}

/** A command as the cluster client sent it to a node (after auto-pipelining, scripts as EVALSHA or EVAL). */
export interface WireCommand {
  client: string;
  name: string;
  keys: string[];
  outcome: 'pending' | 'ok' | 'error';
  error?: string;
}

const sha1 = (text: string) => createHash('sha1').update(text).digest('hex');
const MECHANISM = 'libs/service-kit/src/replicated-writes.ts';
type Fn = (...args: unknown[]) => unknown;

const settle = (promise: unknown, record: { outcome: 'pending' | 'ok' | 'error'; error?: string }) => {
  if (!(promise instanceof Promise)) return;
  promise.then(
    () => (record.outcome = 'ok'),
    (error: unknown) => {
      record.outcome = 'error';
      record.error = error instanceof Error ? error.message : String(error);
    },
  );
};

/**
 * Records what the product does with a Redis client: wrap() answers a stand-in for the client
 * (a Proxy) that notes every script defined, every command and script call with its keys and
 * the product files on the stack, every explicit pipeline and MULTI with their commands, and
 * the outcome of each; and it taps the client's sendCommand, so commands as they go to the nodes
 * (auto-pipelined, scripts as EVALSHA) and errors an adapter swallows are seen too.
 */
export class RedisRecorder {
  readonly scripts = new Map<string, RecordedScript>();
  readonly calls: RecordedCall[] = [];
  readonly batches: RecordedBatch[] = [];
  readonly wire: WireCommand[] = [];
  private readonly names = new Map<string, string>();

  /** `root`: the repository, to name product files relative to it. */
  constructor(private readonly root: string) {}

  /** The stand-in to give the adapters; `label` names the connection in what is recorded. */
  wrap(client: RedisClient, label: string): RedisClient {
    const commands = new Set(client.getBuiltinCommands());
    const target = client as unknown as { sendCommand: (command: Command, ...rest: unknown[]) => unknown };
    const send = target.sendCommand;
    target.sendCommand = (command: Command, ...rest: unknown[]) => {
      this.onWire(label, command);
      return send.call(client, command, ...rest);
    };
    return new Proxy(client, {
      get: (object, prop) => {
        const value: unknown = Reflect.get(object, prop, object);
        if (typeof prop !== 'string' || typeof value !== 'function') return value;
        const fn = value as Fn;
        if (prop === 'defineCommand') {
          return (name: string, definition: { numberOfKeys?: number; lua: string }) => {
            this.define(name, definition, label, new Error().stack);
            return fn.call(object, name, definition);
          };
        }
        if (prop === 'eval') {
          return (lua: string, numberOfKeys: number, ...rest: unknown[]) => {
            const script = this.evalScript(lua, Number(numberOfKeys), label, new Error().stack);
            return this.call(label, script, script, rest.slice(0, Number(numberOfKeys)), undefined, () => fn.call(object, lua, numberOfKeys, ...rest));
          };
        }
        if (prop === 'pipeline' || prop === 'multi') return (...args: unknown[]) => this.batch(label, prop, fn.apply(object, args) as object, commands);
        const script = this.scripts.get(prop);
        if (script) return (...args: unknown[]) => this.call(label, prop, prop, scriptKeys(script, args), undefined, () => fn.apply(object, args));
        if (commands.has(prop.toLowerCase())) return (...args: unknown[]) => this.call(label, prop, undefined, keysOf(prop, args), undefined, () => fn.apply(object, args));
        return fn.bind(object);
      },
    });
  }

  private define(name: string, definition: { numberOfKeys?: number; lua: string }, client: string, stack: string | undefined): void {
    const sha = sha1(definition.lua);
    this.names.set(sha, name);
    if (this.scripts.has(name)) return;
    const frames = this.productFrames(stack);
    this.scripts.set(name, {
      name,
      sha,
      numberOfKeys: definition.numberOfKeys,
      via: frames.includes(MECHANISM) ? 'ReplicatedWrites.define' : 'defineCommand',
      source: frames.find((f) => f !== MECHANISM),
      client,
    });
  }

  private evalScript(lua: string, numberOfKeys: number, client: string, stack: string | undefined): string {
    const sha = sha1(lua);
    const known = this.names.get(sha);
    if (known) return known;
    const name = `eval ${sha.slice(0, 8)}`;
    this.names.set(sha, name);
    this.scripts.set(name, { name, sha, numberOfKeys, via: 'eval', source: this.productFrames(stack)[0], client });
    return name;
  }

  /** Records a call and makes it; in a batch its outcome comes with the batch's replies. */
  private call(client: string, name: string, script: string | undefined, keys: unknown[], batch: RecordedBatch | undefined, run: () => unknown): unknown {
    const call: RecordedCall = { client, name, keys: keys.map(String), sources: this.productFrames(new Error().stack), outcome: 'pending' };
    if (script) call.script = script;
    if (batch) call.batch = batch.kind;
    this.calls.push(call);
    batch?.calls.push(call);
    const result = run();
    if (!batch) settle(result, call);
    return result;
  }

  private batch(client: string, kind: 'pipeline' | 'multi', pipeline: object, commands: Set<string>): unknown {
    const record: RecordedBatch = { client, kind, calls: [], sources: this.productFrames(new Error().stack), outcome: 'pending' };
    this.batches.push(record);
    const proxy: object = new Proxy(pipeline, {
      get: (object, prop) => {
        const value: unknown = Reflect.get(object, prop, object);
        if (typeof prop !== 'string' || typeof value !== 'function') return value;
        const fn = value as Fn;
        if (prop === 'exec') {
          return (...args: unknown[]) => {
            const result = fn.apply(object, args) as Promise<Array<[Error | null, unknown]> | null>;
            result.then(
              (replies) => {
                record.outcome = 'ok';
                record.calls.forEach((call, i) => {
                  const error = replies?.[i]?.[0];
                  call.outcome = error ? 'error' : 'ok';
                  if (error) call.error = error.message;
                });
              },
              (error: Error) => {
                record.outcome = 'error';
                record.error = error.message;
                for (const call of record.calls) Object.assign(call, { outcome: 'error', error: error.message });
              },
            );
            return result;
          };
        }
        let script: string | undefined;
        let keys: (args: unknown[]) => unknown[];
        if (this.scripts.has(prop)) {
          script = prop;
          keys = (args) => scriptKeys(this.scripts.get(prop)!, args);
        } else if (prop === 'eval') {
          keys = (args) => args.slice(2, 2 + Number(args[1]));
        } else if (commands.has(prop.toLowerCase())) {
          keys = (args) => keysOf(prop, args);
        } else {
          return fn.bind(object);
        }
        return (...args: unknown[]) => {
          const name = prop === 'eval' ? (this.names.get(sha1(String(args[0]))) ?? 'eval') : prop;
          const returned = this.call(client, name, script ?? (prop === 'eval' ? name : undefined), keys(args), record, () => fn.apply(object, args));
          return returned === object ? proxy : returned;
        };
      },
    });
    return proxy;
  }

  private onWire(client: string, command: Command): void {
    let keys: string[] = [];
    try {
      keys = command.getKeys().map(String);
    } catch {
      // A command @ioredis/commands does not know: no keys to check.
    }
    const sent: WireCommand = { client, name: command.name, keys, outcome: 'pending' };
    this.wire.push(sent);
    settle(command.promise, sent);
  }

  /** The product files (`services/*` and `libs/*` sources) on a stack, innermost first. */
  private productFrames(stack: string | undefined): string[] {
    const files: string[] = [];
    for (const [, url] of (stack ?? '').matchAll(/(file:\/\/[^\s()]+?\.js):\d+:\d+/g)) {
      const path = relative(this.root, fileURLToPath(url!));
      const m = /^((?:services|libs)\/[^/]+)\/dist\/(.+)\.js$/.exec(path);
      if (!m || m[1] === 'libs/testing') continue;
      const source = `${m[1]}/src/${m[2]}.ts`;
      if (!files.includes(source)) files.push(source);
    }
    return files;
  }
}

/** The keys of a command as ioredis routes it (a hash given as an object counts as its key only). */
function keysOf(name: string, args: unknown[]): string[] {
  try {
    return new Command(name.toLowerCase(), args.filter((a) => typeof a !== 'function') as string[]).getKeys().map(String);
  } catch {
    return [];
  }
}

/** The keys of a call of a defined script: its first numberOfKeys arguments, or, defined without a count, the count its call gives first. */
function scriptKeys(script: { numberOfKeys: number | undefined }, args: unknown[]): unknown[] {
  return script.numberOfKeys === undefined ? args.slice(1, 1 + Number(args[0])) : args.slice(0, script.numberOfKeys);
}
