import { isTransientJetStreamError } from './jetstream-errors.js';

/**
 * Whether an error says "a dependency is unreachable right now" (database, cache, broker, network)
 * rather than "this message cannot be handled". A consumer retries the first kind for as long as
 * the outage lasts instead of counting it against the message: an outage must never turn healthy
 * messages into dead letters.
 */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
]);
// Postgres SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57P operator
// intervention (shutdown, cannot connect now), 57014 a statement timeout (a primary too slow or a
// lock held long, not the message's fault), 55P03 a lock timeout, 40001/40P01 serialization
// failure and deadlock.
const SQLSTATE = /^(08|53|57P|57014$|55P03$|40001$|40P01$)/;
// node-postgres' own connection errors carry no code; JetStream's are told by code (below).
const MESSAGES = /connection (is closed|terminated|refused)|timeout exceeded when trying to connect|connection error/i;
// StreamUnreachableError: a one-off read of a stream (readOnce) heard from no server past its bound.
const NAMES = new Set(['MaxRetriesPerRequestError', 'ClusterAllFailedError', 'TimeoutError', 'NoRespondersError', 'ConnectionError', 'StreamUnreachableError']);
/**
 * Redis replies about the server's state, not the command: a slot moving or without a master
 * during a failover (MOVED to a master that just died, ASK, TRYAGAIN, CLUSTERDOWN), a server
 * loading its data or demoted under its client (LOADING, READONLY), a replica whose master is
 * down (MASTERDOWN), too few replicas for a write (NOREPLICAS), a server out of memory (OOM), busy
 * with a script past its time limit (BUSY) or refusing writes because it cannot persist (MISCONF).
 * Each is mended by time or by an operator, never by changing the message. (BUSYKEY and BUSYGROUP
 * are other errors: `\b` keeps them out.)
 */
const REDIS_STATE = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|LOADING|READONLY|MASTERDOWN|NOREPLICAS|OOM|BUSY|MISCONF)\b/;
/**
 * What ioredis itself says when a server does not answer in time or the connection went: a
 * command past its `commandTimeout`, a socket without data past its `socketTimeout` (sentinel mode:
 * the connection is then made again through the sentinels), a command written on a connection that
 * closed, a cluster whose nodes cannot be reached. Their names are plain `Error`: told by message.
 */
const REDIS_CLIENT = /^(Command timed out|Socket timeout\.|Command aborted due to connection close|Connection is aborted|Stream isn't writeable|Cluster is disconnected|Node is disconnected|None of startup nodes is available|Too many Cluster redirections|Failed to refresh slots cache)/;

export function isTransientDependencyError(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current; depth++) {
    if (typeof current !== 'object') return false;
    const e = current as { name?: unknown; code?: unknown; message?: unknown; cause?: unknown };
    if (e.name === 'ContractError' && e.code === 'unavailable') return true;
    if (isTransientJetStreamError(current)) return true;
    if (typeof e.code === 'string' && (NETWORK_CODES.has(e.code) || SQLSTATE.test(e.code))) return true;
    if (typeof e.name === 'string' && NAMES.has(e.name)) return true;
    if (typeof e.message === 'string' && (MESSAGES.test(e.message) || REDIS_STATE.test(e.message) || REDIS_CLIENT.test(e.message))) return true;
    current = e.cause;
  }
  return false;
}
