import { after, afterEach, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Controller, Get, Inject, Module } from '@nestjs/common';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Streams } from '@mfa/contracts';
import { keyringFromMasterKey, type Keyring } from '@mfa/crypto';
import type { Logger } from '@mfa/telemetry';
import { itWith, testEnv } from '@mfa/testing';
import { AuthModule } from './auth/auth.module.js';
import { runService } from './bootstrap.js';
import { KEYRING, KEYRING_FINGERPRINT_SUBJECT, KeyringCheck, KeyringMismatchError } from './keyring-check.js';
import { MessagingModule } from './messaging.module.js';

// A service module booted by runService, with a master key of its own, next to a responder on
// the real subject that plays a running service with another (or the same) key.

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recordingLogger(lines: LogLine[]): Logger {
  const write = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields: fields ?? {} });
  const log: Logger = { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error'), child: () => log };
  return log;
}

const newKeyring = (previous: Keyring[] = []) => keyringFromMasterKey(randomBytes(32), previous);

let initialized = 0;

@Controller('probe')
class ProbeController {
  constructor(@Inject(KEYRING) private readonly keyring: Keyring) {
    initialized++;
  }
  @Get()
  kid() {
    return { kid: this.keyring.kid };
  }
}

const run = randomUUID().slice(0, 8);

@Module({})
class ProbeModule {}

function bootProbe(keyring: Keyring, log: Logger) {
  return runService({
    name: 'probe-service',
    module: {
      module: ProbeModule,
      imports: [
        // The streams the API client directory reads.
        MessagingModule.forRoot({ serviceName: `keyring-test-${run}`, nats: { NATS_URL: testEnv.natsUrl }, log, streams: [Streams.userSettings, Streams.state], replicas: 1 }),
        AuthModule.forRoot({ auth: { mode: 'off', platformKey: undefined }, keyring }),
      ],
      controllers: [ProbeController],
    },
    config: { HTTP_HOST: '127.0.0.1', HTTP_PORT: 0, INSTANCE_NAME: `probe-${run}`, keyring },
    log,
  });
}

describe('the master key check at boot', () => {
  let nc: NatsConnection;
  const responders: KeyringCheck[] = [];

  /** A running service elsewhere: answers on the subject with `keyring`'s kid. */
  async function responder(keyring: Keyring, log: Logger): Promise<KeyringCheck> {
    const check = new KeyringCheck(nc, { keyring, service: 'peer-service', instance: `peer-${run}`, log });
    await check.start();
    responders.push(check);
    return check;
  }

  before(async () => {
    nc = await connect({ servers: testEnv.natsUrl });
  });

  const stopResponders = () => {
    for (const r of responders.splice(0)) r.stop();
  };
  afterEach(stopResponders);

  after(async () => {
    await nc.drain();
  });

  itWith({ real: ['nats'] }, 'refuses to boot next to a running service with another key, naming both fingerprints', async () => {
    const peerLog: LogLine[] = [];
    const peer = newKeyring();
    await responder(peer, recordingLogger(peerLog));
    const ours = newKeyring();
    const bootLog: LogLine[] = [];
    initialized = 0;

    const boot = bootProbe(ours, recordingLogger(bootLog));
    await assert.rejects(boot, (error: Error) => {
      assert.ok(error instanceof KeyringMismatchError, String(error));
      assert.match(error.message, /^master key mismatch/);
      assert.ok(error.message.includes(ours.kid) && error.message.includes(peer.kid), error.message);
      assert.ok(error.message.includes('peer-service'), error.message);
      return true;
    });
    assert.equal(initialized, 1, 'the module was built, then the check stopped the boot');
    assert.ok(!bootLog.some((l) => l.msg === 'probe-service ready'), 'never served');

    const complaint = peerLog.find((l) => l.level === 'error');
    assert.ok(complaint, 'the running service logs the mismatch');
    assert.match(complaint.msg, /^master key mismatch/);
    assert.ok(complaint.msg.includes(ours.kid) && complaint.msg.includes(peer.kid));
    assert.deepEqual([complaint.fields.ours, complaint.fields.theirs], [peer.kid, ours.kid]);

    // The refused instance left nothing answering with its key.
    const replies = await nc.requestMany(KEYRING_FINGERPRINT_SUBJECT, JSON.stringify({}), { strategy: 'timer', maxWait: 300 });
    const kids: string[] = [];
    for await (const m of replies) kids.push(m.json<{ kid: string }>().kid);
    assert.ok(!kids.includes(ours.kid), JSON.stringify(kids));
    stopResponders();
  });

  itWith({ real: ['nats'] }, 'boots next to running services with the same key, and answers with its own from then on', async () => {
    const shared = newKeyring();
    const peerLog: LogLine[] = [];
    await responder(shared, recordingLogger(peerLog));
    const bootLog: LogLine[] = [];
    const service = await bootProbe(shared, recordingLogger(bootLog));
    try {
      assert.ok(bootLog.some((l) => l.msg === 'master key shared with the running services' && l.fields.peers === 1 && l.fields.kid === shared.kid));
      assert.deepEqual(await (await fetch(`${service.url}/probe`)).json(), { kid: shared.kid }, 'KEYRING is the configured keyring');
      assert.equal(peerLog.filter((l) => l.level === 'error' || l.level === 'warn').length, 0);

      // A later instance with another key is refused because this one answers.
      stopResponders();
      await assert.rejects(bootProbe(newKeyring(), recordingLogger([])), (error: Error) => error.message.includes(shared.kid));
    } finally {
      await service.stop();
    }
  });

  itWith({ real: ['nats'] }, 'boots alone (nobody answers) and across a rotation, but not with a key the others rotated away from', async () => {
    const alone = await bootProbe(newKeyring(), recordingLogger([]));
    await alone.stop();

    const old = newKeyring();
    const rotated = newKeyring([old]);
    const oldPeerLog: LogLine[] = [];
    await responder(old, recordingLogger(oldPeerLog));
    const rotatedLog: LogLine[] = [];
    const service = await bootProbe(rotated, recordingLogger(rotatedLog));
    await service.stop();
    assert.ok(
      rotatedLog.some((l) => l.level === 'warn' && /previous master key/.test(l.msg)),
      `the new one warns that requests between the services fail meanwhile: ${JSON.stringify(rotatedLog)}`,
    );
    const note = oldPeerLog.find((l) => l.level === 'warn');
    assert.ok(note && /newer master key/.test(note.msg) && note.fields.theirs === rotated.kid, JSON.stringify(oldPeerLog));
    assert.equal(oldPeerLog.filter((l) => l.level === 'error').length, 0);
    stopResponders();

    await responder(rotated, recordingLogger([]));
    await assert.rejects(bootProbe(old, recordingLogger([])), KeyringMismatchError);
    stopResponders();
  });
});
