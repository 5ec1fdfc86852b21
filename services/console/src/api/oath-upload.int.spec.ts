import 'reflect-metadata';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe } from 'node:test';
import express from 'express';
import { Redis } from 'ioredis';
import { Objm, StorageType, type ObjectStore } from '@nats-io/obj';
import { IMPORTS_BUCKET } from '@mfa/contracts';
import { connectNats, type NatsClients } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import { itWith, startNatsServer, testEnv, uniqueTenant, type NatsServerProcess } from '@mfa/testing';
import { MfaApi } from '../adapters/mfa-api.js';
import { UploadSlots } from '../adapters/upload-slots.js';
import { accessFromRoles } from '../domain/roles.js';
import { MAX_CONSOLE_IMPORTS_PER_TENANT, PagesController } from './pages.controller.js';
import { Views } from './views.js';
import type { WebRequest } from './web.js';

/**
 * The import page's upload over real HTTP into a real MFA_IMPORTS, on a nats-server of the test's
 * own (its bucket's limit is the test's), signed in as the admin of three tenants.
 */
describe('token file uploads through the console (real NATS)', () => {
  let server: NatsServerProcess;
  let nats: NatsClients;
  let store: ObjectStore;
  let http: Server;
  let base: string;
  let redis: Redis;
  /** A tenant of its own per run: its upload slots are in the shared Redis. */
  const rushed = uniqueTenant('rushed');
  const errors: unknown[] = [];
  /** The bucket's limit here: small, so that a few files fill it. */
  const MAX_BYTES = 1024 * 1024;

  before(async () => {
    server = await startNatsServer();
    nats = await connectNats({ url: server.url, name: 'console-upload-test', connectTimeoutMs: 5_000 });
    // As user-settings creates it, with a limit of this test's.
    store = await new Objm(nats.nc).create(IMPORTS_BUCKET, { replicas: 1, storage: StorageType.File, max_bytes: MAX_BYTES });
    const log = { error: (_msg: string, fields: { error?: unknown }) => errors.push(fields?.error), warn: () => undefined, info: () => undefined, debug: () => undefined } as unknown as Logger;
    redis = new Redis(testEnv.redisUrl);
    const pages = new PagesController(new MfaApi(nats.nc, undefined), new Views(), log, new UploadSlots(redis));
    const roles = ['tenant-admin:contoso', 'tenant-admin:fabrikam', 'tenant-admin:tailspin', `tenant-admin:${rushed}`];
    const app = express();
    app.use((req, _res, next) => {
      Object.assign(req, { session: { id: 's', operator: { sub: 'adam' }, roles, csrf: 'x', createdAt: 0, via: 'dev' }, access: accessFromRoles(roles) });
      next();
    });
    app.post('/t/:tenant/oath/upload', (req, res) => void pages.uploadOathFile(req as unknown as WebRequest, res, String(req.params.tenant)));
    http = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => http.once('listening', resolve));
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });

  after(async () => {
    await redis.quit();
    await new Promise((resolve) => http.close(resolve));
    await nats.nc.drain();
    await server.stop();
  });

  beforeEach(async () => {
    await nats.jsm.streams.purge(`OBJ_${IMPORTS_BUCKET}`);
    errors.length = 0;
  });

  const upload = async (tenant: string, bytes: number) => {
    const response = await fetch(`${base}/t/${tenant}/oath/upload`, { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: Buffer.alloc(bytes, 0x61) });
    return { status: response.status, body: (await response.json()) as { object?: string; error?: { code: string; message: string } } };
  };
  const uploadsOf = async (tenant: string) => (await store.list()).filter((info) => !info.deleted && info.name.startsWith(`${tenant}/console-`)).map((info) => info.name);

  itWith({ real: ['nats'] }, 'holds at most a few files of a tenant not yet imported: the next is refused unread (429) until one is gone; other tenants upload meanwhile', async () => {
    const taken: string[] = [];
    for (let i = 0; i < MAX_CONSOLE_IMPORTS_PER_TENANT; i++) {
      const { status, body } = await upload('contoso', 1000);
      assert.equal(status, 200, JSON.stringify(body));
      taken.push(body.object!);
    }
    const refused = await upload('contoso', 1000);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.error?.code, 'rate_limited');
    assert.match(refused.body.error?.message ?? '', /waiting for their import or being imported/);
    assert.deepEqual((await uploadsOf('contoso')).sort(), [...taken].sort(), 'the refused file was not stored');

    assert.equal((await upload('fabrikam', 1000)).status, 200, 'another tenant’s uploads are counted apart');

    // One is imported (its job deletes it) or deleted as unclaimed: the tenant uploads again.
    await store.delete(taken[0]!);
    assert.equal((await upload('contoso', 1000)).status, 200);
    assert.deepEqual(errors, []);
  });

  itWith({ real: ['nats', 'redis'] }, 'uploads started at once take a slot each: no more than the limit are stored, however many start together', async () => {
    const all = await Promise.all(Array.from({ length: 3 * MAX_CONSOLE_IMPORTS_PER_TENANT }, () => upload(rushed, 20 * 1024)));
    const stored = all.filter((u) => u.status === 200);
    assert.ok(stored.length >= 1 && stored.length <= MAX_CONSOLE_IMPORTS_PER_TENANT, `${stored.length} stored`);
    assert.ok(all.every((u) => u.status === 200 || u.status === 429), all.map((u) => u.status).join());
    assert.equal((await uploadsOf(rushed)).length, stored.length);
    assert.equal(await redis.exists(`mfa:{uploads:${rushed}}:slots`), 0, 'every slot given back');
  });

  itWith({ real: ['redis'] }, 'slots: at most the limit under way, each given back; one never given back frees itself after its time', async () => {
    const slots = new UploadSlots(redis);
    const tenant = uniqueTenant('slots');
    const now = Date.now();
    const taken = await Promise.all([0, 1, 2, 3].map(() => slots.take(tenant, MAX_CONSOLE_IMPORTS_PER_TENANT, now)));
    assert.deepEqual(taken.map((t) => t?.underWay).sort(), [1, 2, 3, 4]);
    assert.equal(await slots.take(tenant, MAX_CONSOLE_IMPORTS_PER_TENANT, now), undefined, 'four under way');
    await slots.give(tenant, taken[0]!.slot);
    assert.equal((await slots.take(tenant, MAX_CONSOLE_IMPORTS_PER_TENANT, now))?.underWay, 4);
    assert.equal((await slots.take(tenant, MAX_CONSOLE_IMPORTS_PER_TENANT, now + 31 * 60_000))?.underWay, 1, 'the others lapsed');
  });

  itWith({ real: ['nats'] }, 'refuses a file with 503 when the imports store is full, and leaves nothing of it behind', async () => {
    assert.equal((await upload('tailspin', 600 * 1024)).status, 200);
    const held = (await nats.jsm.streams.info(`OBJ_${IMPORTS_BUCKET}`)).state.bytes;
    const full = await upload('tailspin', 600 * 1024);
    assert.equal(full.status, 503);
    assert.deepEqual(full.body.error, { code: 'unavailable', message: 'the imports store is full (files waiting for their import, error files); try again later' });
    assert.equal((await uploadsOf('tailspin')).length, 1);
    assert.equal((await nats.jsm.streams.info(`OBJ_${IMPORTS_BUCKET}`)).state.bytes, held, 'no chunk of the refused file is left');
  });
});
