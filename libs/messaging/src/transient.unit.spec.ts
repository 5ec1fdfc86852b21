import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError } from '@mfa/contracts';
import { JetStreamApiError, JetStreamError } from '@nats-io/jetstream';
import { isTransientDependencyError } from './transient.js';
import { StreamUnreachableError } from './follow.js';
import { isNoMessageFound, isStreamNameInUse, isStreamOrConsumerNotFound, isWrongLastSequence, JetStreamCodes } from './jetstream-errors.js';

/** An error as the client builds it from a JetStream API reply ({code, err_code, description}). */
const apiError = (err_code: number, description: string, code = 503) => new JetStreamApiError({ code, err_code, description });
/** A pull status (the client's JetStreamStatusError is a JetStreamError carrying the status code). */
const statusError = (code: number) => Object.assign(new JetStreamError(`status ${code}`), { code });

/** An error Redis answered with, as ioredis gives it. */
const redisReply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });

describe('transient dependency errors', () => {
  it('recognises outages of the database, cache, broker and network, also behind a cause', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    for (const error of [
      refused,
      new Error('projection failed', { cause: refused }),
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      Object.assign(new Error('the database system is starting up'), { code: '57P03' }),
      Object.assign(new Error('could not serialize access'), { code: '40001' }),
      Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }),
      Object.assign(new Error('canceling statement due to lock timeout'), { code: '55P03' }),
      Object.assign(new Error('Reached the max retries per request limit'), { name: 'MaxRetriesPerRequestError' }),
      new Error('Connection is closed.'),
      new Error('Connection terminated unexpectedly'),
      new ContractError('unavailable', 'challenge store unavailable'),
      apiError(JetStreamCodes.ClusterNotAvailable, 'JetStream system temporarily unavailable'),
      apiError(JetStreamCodes.ClusterNotLeader, 'JetStream cluster can not handle request'),
      apiError(JetStreamCodes.StreamOffline, 'stream is offline'),
      new Error('publish failed', { cause: apiError(JetStreamCodes.ClusterNoPeers, 'no suitable peers for placement') }),
      statusError(503),
      statusError(409),
      // A one-off read of the log whose stream no server served past its bound (readOnce).
      new StreamUnreachableError('MFA_FRAUD', 'mfa.evt.fraud.user.>', 12, 30_000),
      // Redis answering about its own state during a failover.
      redisReply('MOVED 8089 127.0.0.1:38075'),
      redisReply('ASK 8089 127.0.0.1:38076'),
      redisReply('CLUSTERDOWN The cluster is down'),
      redisReply('TRYAGAIN Multiple keys request during rehashing of slot'),
      redisReply("READONLY You can't write against a read only replica."),
      redisReply('LOADING Redis is loading the dataset in memory'),
      redisReply('MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no'),
      redisReply('NOREPLICAS Not enough good replicas to write.'),
      // Redis refusing work for its own condition: memory, a long script, persistence.
      redisReply("OOM command not allowed when used memory > 'maxmemory'."),
      redisReply('BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.'),
      redisReply('MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.'),
      // ioredis when a server does not answer (a hung or partitioned master) or the connection went.
      new Error('Command timed out'),
      new Error("Socket timeout. Expecting data, but didn't receive any in 2000ms."),
      Object.assign(new Error('Command aborted due to connection close'), { name: 'AbortError' }),
      new Error('Stream isn\'t writeable and enableOfflineQueue options is false'),
      new Error('Too many Cluster redirections. Last error: Error: Connection is closed.'),
      Object.assign(new Error('Failed to refresh slots cache.'), { name: 'ClusterAllFailedError' }),
      new Error('verify failed', { cause: new Error('Command timed out') }),
    ]) {
      assert.equal(isTransientDependencyError(error), true, String(error));
    }
  });

  it('does not excuse errors that retrying cannot fix', () => {
    for (const error of [
      new Error('Cannot read properties of undefined'),
      Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' }),
      Object.assign(new Error('invalid input syntax for type timestamp'), { code: '22007' }),
      new ContractError('invalid_request', 'bad'),
      redisReply('ERR Error running script (call to f_0a1b): @user_script:3: attempt to compare nil with number'),
      redisReply('WRONGTYPE Operation against a key holding the wrong kind of value'),
      redisReply('CROSSSLOT Keys in request don\'t hash to the same slot'),
      redisReply('BUSYKEY Target key name already exists.'),
      redisReply('BUSYGROUP Consumer Group name already exists'),
      redisReply('NOSCRIPT No matching script. Please use EVAL.'),
      apiError(JetStreamCodes.StreamWrongLastSequence, 'wrong last sequence: 4', 400),
      apiError(JetStreamCodes.StreamNotFound, 'stream not found', 404),
      // A message that reads like an outage is not one when its code says otherwise.
      apiError(10052, "stream isn't writeable (temporarily unavailable)", 500),
      statusError(400),
      'a string',
      undefined,
    ]) {
      assert.equal(isTransientDependencyError(error), false, String(error));
    }
  });

  it('tells JetStream API errors apart by their codes, not their messages', () => {
    assert.equal(isWrongLastSequence(apiError(JetStreamCodes.StreamWrongLastSequence, 'wrong last sequence: 7', 400)), true);
    assert.equal(isWrongLastSequence(apiError(JetStreamCodes.StreamWrongLastSequenceUnknown, 'wrong last sequence', 400)), true);
    assert.equal(isWrongLastSequence(new Error('wrong last sequence: 7')), false);
    assert.equal(isStreamOrConsumerNotFound(apiError(JetStreamCodes.StreamNotFound, 'stream not found', 404)), true);
    assert.equal(isStreamOrConsumerNotFound(apiError(JetStreamCodes.ConsumerNotFound, 'consumer not found', 404)), true);
    assert.equal(isStreamOrConsumerNotFound(apiError(JetStreamCodes.NoMessageFound, 'no message found', 404)), false);
    assert.equal(isNoMessageFound(apiError(JetStreamCodes.NoMessageFound, 'no message found', 404)), true);
    assert.equal(isStreamNameInUse(apiError(JetStreamCodes.StreamNameExists, 'stream name already in use', 400)), true);
    assert.equal(isStreamNameInUse(new Error('stream name already in use')), false);
  });
});
