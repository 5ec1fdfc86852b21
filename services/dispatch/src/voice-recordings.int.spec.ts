import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Objm } from '@nats-io/obj';
import { ContractError, VoiceMessageBuckets } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import { connectNats, type NatsClients } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { itWith, silentMp3, testEnv, toneWav, uniqueTenant } from '@mfa/testing';
import { RecordingStore } from './adapters/voice/recording-store.js';
import { RECORDING_URL_SECONDS, VoiceRecordingsService } from './application/voice-recordings.service.js';

process.env.LOG_LEVEL ??= 'warn';

/**
 * Tenants' voice recordings against the real NATS object stores: an upload is taken from
 * MFA_VOICE_UPLOADS only when its bytes are WAV or MP3 and at most 1 MB, kept per tenant, type and
 * language in MFA_VOICE_MESSAGES, and served only through the signed URL of that very recording
 * until it expires.
 */
describe('voice recordings: upload, list, play by signed URL, delete', () => {
  const { keyring } = loadKeyring(process.env);
  const tenant = uniqueTenant('rec');
  const other = uniqueTenant('rec-other');
  let nats: NatsClients;
  let store: RecordingStore;
  let now = Date.now();
  let service: VoiceRecordingsService;
  const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
  const put = async (name: string, bytes: Uint8Array) => (await new Objm(nats.nc).open(VoiceMessageBuckets.uploads)).putBlob({ name }, bytes);
  const uploadsHas = async (name: string) => {
    const info = await (await new Objm(nats.nc).open(VoiceMessageBuckets.uploads)).info(name);
    return info !== null && !info.deleted;
  };
  async function fetched(url: string): Promise<{ status: number; sha?: string; contentType?: string }> {
    const [tenantId, token] = url.split('/voice/recordings/')[1]!.split('/').map(decodeURIComponent) as [string, string];
    const answer = await service.fetch(tenantId, token);
    if (answer.status === 404) return { status: 404 };
    const chunks: Buffer[] = [];
    for await (const chunk of answer.body) chunks.push(chunk as Buffer);
    return { status: 200, sha: sha256(Buffer.concat(chunks)), contentType: answer.contentType };
  }
  const refused = async (promise: Promise<unknown>, code: string, message: RegExp) =>
    assert.rejects(promise, (e: unknown) => e instanceof ContractError && e.code === code && message.test(e.message));

  before(async () => {
    nats = await connectNats({ url: testEnv.natsUrl, name: 'voice-recordings-int' });
    store = await RecordingStore.open(nats, 1);
    service = new VoiceRecordingsService({
      store,
      keyring,
      tenantExists: async (id) => id === tenant || id === other,
      webhookBaseUrl: 'https://mfa.example/hooks/',
      log: createLogger('dispatch-int'),
      clock: () => new Date(now),
    });
  });

  after(async () => {
    for (const id of [tenant, other]) for (const m of (await service.list({ tenantId: id })).messages) await service.delete({ tenantId: id, type: m.type, language: m.language });
    await nats?.nc.drain();
  });

  itWith({ real: ['nats'] }, 'takes a WAV from the upload bucket, lists it for its tenant only, serves it by its signed URL, deletes it', async () => {
    const wav = toneWav(2);
    await put(`${tenant}/greeting.wav`, wav);
    const reply = await service.upload({ tenantId: tenant, type: 'greetingStandard', language: 'fr', object: `${tenant}/greeting.wav` });
    assert.deepEqual({ ...reply, uploadedAt: undefined }, {
      type: 'greetingStandard',
      language: 'fr',
      format: 'wav',
      bytes: wav.length,
      durationSeconds: 2,
      digest: reply.digest,
      uploadedAt: undefined,
      warnings: [],
    });
    assert.equal(await uploadsHas(`${tenant}/greeting.wav`), false, 'the upload is gone once taken');
    assert.deepEqual((await service.list({ tenantId: tenant })).messages.map((m) => [m.type, m.language, m.format]), [['greetingStandard', 'fr', 'wav']]);
    assert.deepEqual((await service.list({ tenantId: other })).messages, [], 'another tenant sees none of it');

    const recording = (await service.recorded(tenant, 'greetingStandard', 'fr'))!;
    assert.equal(await service.recorded(tenant, 'greetingStandard', 'en'), undefined);
    assert.equal(await service.recorded(other, 'greetingStandard', 'fr'), undefined);
    const url = service.playUrl(tenant, 'greetingStandard', 'fr', recording);
    assert.match(url, new RegExp(`^https://mfa\\.example/hooks/voice/recordings/${tenant}/[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]{22}$`));
    assert.deepEqual(await fetched(url), { status: 200, sha: sha256(wav), contentType: 'audio/wav' });

    // Another tenant's path, an edited token, a token of another recording's payload: not found.
    assert.equal((await fetched(url.replace(`/${tenant}/`, `/${other}/`))).status, 404);
    const token = url.split('/').at(-1)!;
    const [payload, tag] = token.split('.') as [string, string];
    const edited = Buffer.from(JSON.stringify(['greetingPin', 'fr', recording.info.digest, Math.floor(now / 1000) + 60])).toString('base64url');
    assert.equal((await fetched(url.replace(token, `${edited}.${tag}`))).status, 404);
    assert.equal((await fetched(url.replace(token, `${payload}.${'A'.repeat(22)}`))).status, 404);
    // Expired.
    now += (RECORDING_URL_SECONDS + 1) * 1000;
    assert.equal((await fetched(url)).status, 404);
    now = Date.now();

    // Replaced by an MP3: the old URL no longer serves anything; the new one serves the MP3.
    const fresh = service.playUrl(tenant, 'greetingStandard', 'fr', recording);
    const mp3 = silentMp3(3);
    await put(`${tenant}/greeting.mp3`, mp3);
    assert.equal((await service.upload({ tenantId: tenant, type: 'greetingStandard', language: 'fr', object: `${tenant}/greeting.mp3` })).format, 'mp3');
    assert.equal((await fetched(fresh)).status, 404);
    const replaced = (await service.recorded(tenant, 'greetingStandard', 'fr'))!;
    assert.deepEqual(await fetched(service.playUrl(tenant, 'greetingStandard', 'fr', replaced)), { status: 200, sha: sha256(mp3), contentType: 'audio/mpeg' });

    assert.deepEqual(await service.delete({ tenantId: tenant, type: 'greetingStandard', language: 'fr' }), { type: 'greetingStandard', language: 'fr', deleted: true });
    assert.deepEqual(await service.delete({ tenantId: tenant, type: 'greetingStandard', language: 'fr' }), { type: 'greetingStandard', language: 'fr', deleted: false });
    assert.deepEqual((await service.list({ tenantId: tenant })).messages, []);
    assert.equal((await fetched(service.playUrl(tenant, 'greetingStandard', 'fr', replaced))).status, 404);
  });

  itWith({ real: ['nats'] }, 'refuses files that lie about their type or exceed 1 MB, missing uploads and unknown tenants, keeping nothing', async () => {
    await put(`${tenant}/lies.wav`, Buffer.concat([Buffer.from('GIF89a'), Buffer.alloc(512)]));
    await refused(service.upload({ tenantId: tenant, type: 'greetingPin', language: 'en', object: `${tenant}/lies.wav` }), 'invalid_request', /not a WAV or MP3 recording \(its content is image\/gif\)/);
    assert.equal(await uploadsHas(`${tenant}/lies.wav`), false, 'a refused upload is discarded');
    await put(`${tenant}/huge.wav`, toneWav(70));
    await refused(service.upload({ tenantId: tenant, type: 'greetingPin', language: 'en', object: `${tenant}/huge.wav` }), 'invalid_request', /larger than 1 MB/);
    await refused(service.upload({ tenantId: tenant, type: 'greetingPin', language: 'en', object: `${tenant}/never-uploaded.wav` }), 'not_found', /^object: no such upload \(uploads expire after an hour\)$/);
    await put(`nobody-${tenant}/x.wav`, toneWav(1));
    await refused(service.upload({ tenantId: `nobody-${tenant}`, type: 'greetingPin', language: 'en', object: `nobody-${tenant}/x.wav` }), 'not_found', /unknown tenant/);
    await refused(service.list({ tenantId: `nobody-${tenant}` }), 'not_found', /unknown tenant/);
    assert.deepEqual((await service.list({ tenantId: tenant })).messages, []);
  });
});
