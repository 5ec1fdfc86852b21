import { connect as tcpConnect } from 'node:net';

// Commands in Redis's protocol (RESP2) over a plain socket, one connection each: what the Redis
// harnesses ask their servers (PING, INFO, CLUSTER INFO/NODES, SENTINEL …). No Redis client: the
// package's entry point must not load one (index.unit.spec), and a client's reconnects and
// redirects would only blur what a harness asks one particular process. Internal.

export type RespValue = string | number | null | Error | RespValue[];

/**
 * Sends one command to 127.0.0.1:`port` and resolves with the reply (a Redis error reply rejects
 * with its text); rejects when the port refuses the connection or nothing answers in `timeoutMs`.
 */
export function redisCommand(port: number, args: readonly string[], timeoutMs = 2_000): Promise<RespValue> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    const done = (error: Error | undefined, value?: RespValue) => {
      socket.destroy();
      if (error) reject(error);
      else resolve(value ?? null);
    };
    socket.setTimeout(timeoutMs, () => done(new Error(`no reply from 127.0.0.1:${port} to ${args[0]} within ${timeoutMs} ms`)));
    socket.once('connect', () => socket.write(encode(args)));
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      let parsed: [RespValue, number] | undefined;
      try {
        parsed = parse(buffer, 0);
      } catch (error) {
        return done(error as Error);
      }
      if (!parsed) return;
      const [value] = parsed;
      if (value instanceof Error) done(new Error(`127.0.0.1:${port} answered ${args.join(' ')} with ${value.message}`));
      else done(undefined, value);
    });
    socket.once('error', (error) => done(error));
    socket.once('close', () => done(new Error(`127.0.0.1:${port} closed the connection before answering ${args[0]}`)));
  });
}

/** Whether a Redis server (or sentinel) answers PING on 127.0.0.1:`port`. */
export async function answersPing(port: number): Promise<boolean> {
  try {
    return (await redisCommand(port, ['PING'])) === 'PONG';
  } catch {
    return false;
  }
}

/** `INFO <section>` as field → value (`role`, `master_link_status`, …). */
export async function redisInfo(port: number, section: string): Promise<Record<string, string>> {
  const text = String(await redisCommand(port, ['INFO', section]));
  const fields: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}

function encode(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) parts.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  return Buffer.from(parts.join(''));
}

/** One reply from `offset`, and where the next begins; undefined while the reply is incomplete. */
function parse(buffer: Buffer, offset: number): [RespValue, number] | undefined {
  const lineEnd = buffer.indexOf('\r\n', offset);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buffer[offset]!);
  const line = buffer.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return [line, next];
    case '-':
      return [new Error(line), next];
    case ':':
      return [Number(line), next];
    case '$': {
      const length = Number(line);
      if (length < 0) return [null, next];
      if (buffer.length < next + length + 2) return undefined;
      return [buffer.toString('utf8', next, next + length), next + length + 2];
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return [null, next];
      const items: RespValue[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, at);
        if (!item) return undefined;
        items.push(item[0]);
        at = item[1];
      }
      return [items, at];
    }
    default:
      throw new Error(`not a RESP2 reply: ${buffer.toString('utf8', offset, Math.min(buffer.length, offset + 40))}`);
  }
}
