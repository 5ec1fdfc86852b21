import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JetStreamApiError } from '@nats-io/jetstream';
import { Consumers, type ConsumerDefinition } from '@mfa/contracts';
import { WORKING_EVERY_MS } from './consumer.js';
import { JetStreamCodes } from './jetstream-errors.js';
import { provision } from './topology.js';

const timeout = () => Object.assign(new Error('timeout'), { name: 'TimeoutError' });
const apiError = (code: number) => new JetStreamApiError({ err_code: code, code: 503, description: `error ${code}` });

describe('provision: a boot call JetStream cannot answer yet', () => {
  it('is made again after a timeout or an election, until it succeeds', async () => {
    const failures = [timeout(), apiError(JetStreamCodes.ClusterNotLeader), apiError(JetStreamCodes.ClusterNotAvailable)];
    let calls = 0;
    const result = await provision('creating stream S', async () => {
      calls++;
      const failure = failures.shift();
      if (failure) throw failure;
      return 'created';
    });
    assert.equal(result, 'created');
    assert.equal(calls, 4);
  });

  it('is refused at once for what waiting cannot mend: too few servers for the replicas, a bad configuration', async () => {
    for (const error of [apiError(JetStreamCodes.InsufficientResources), apiError(JetStreamCodes.ClusterNoPeers), apiError(10052), new Error('invalid config')]) {
      let calls = 0;
      await assert.rejects(
        provision('creating stream S', async () => {
          calls++;
          throw error;
        }),
        (thrown) => thrown === error,
      );
      assert.equal(calls, 1, error.message);
    }
  });

  it('gives up after its patience, saying what it tried', async () => {
    let calls = 0;
    await assert.rejects(
      provision(
        'provisioning stream MFA_X',
        async () => {
          calls++;
          throw timeout();
        },
        250,
      ),
      /provisioning stream MFA_X: JetStream did not answer within 250 ms \(timeout\)/,
    );
    assert.ok(calls >= 2, `tried ${calls} times`);
  });
});

describe('WORKING_EVERY_MS', () => {
  it('is well within every consumer’s ack wait: a handler at work on a message for long tells JetStream so several times before it would redeliver', () => {
    const definitions = Object.values(Consumers as Record<string, unknown>).filter((d): d is ConsumerDefinition => typeof d === 'object' && d !== null && 'ackWaitSeconds' in d);
    assert.ok(definitions.length >= 10, `${definitions.length} consumers`);
    for (const definition of definitions) assert.ok(definition.ackWaitSeconds * 1000 >= 4 * WORKING_EVERY_MS, `${definition.durable}: ack wait ${definition.ackWaitSeconds} s`);
  });
});
