import 'reflect-metadata';
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { ContractError, defaultTenantSettings, Subjects, type TenantSettings } from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';
import type { MfaApi } from '../adapters/mfa-api.js';
import { accessFromRoles } from '../domain/roles.js';
import { formValues, shownSettings, shownToken } from '../domain/settings-form.js';
import { PagesController } from './pages.controller.js';
import { Views } from './views.js';
import type { WebRequest } from './web.js';

const tenant = 'contoso';
const spaced = 'alice@contoso.com ';
const row = { occurredAt: '2026-11-01T10:00:00.000Z', userId: 'alice@contoso.com', result: 'success', resultDetail: 'MFA successfully completed', challengeId: 'c1', via: 'nats' };

/**
 * The pages controller over real HTTP (Express, the real templates), signed in as a platform
 * operator, with the NATS API stubbed: each test says what the services answer, and sees what the
 * console asked them.
 */
describe('console pages', () => {
  let server: Server;
  let base: string;
  let calls: Array<{ subject: string; body: Record<string, unknown> }>;
  let answer: (subject: string, body: Record<string, unknown>) => Promise<unknown>;
  let errors: string[];
  const zone = process.env.TZ;

  /** An app whose requests come signed in as `sub` with `roles`, over the stubbed API. */
  function signedIn(sub: string, roles: string[]) {
    const api = {
      call: async (subject: string, body: Record<string, unknown>) => {
        calls.push({ subject, body });
        return answer(subject, body);
      },
    } as unknown as MfaApi;
    const log = { error: (msg: string) => errors.push(msg), warn: () => undefined, info: () => undefined, debug: () => undefined } as unknown as Logger;
    const pages = new PagesController(api, new Views(), log);
    const app = express();
    app.use(express.urlencoded({ extended: false }));
    app.use((req, _res, next) => {
      Object.assign(req, { session: { id: 's', operator: { sub }, roles, csrf: 'x', createdAt: 0, via: 'dev' }, access: accessFromRoles(roles) });
      next();
    });
    return { app, pages };
  }

  before(async () => {
    // A host far from UTC: a time without an offset must still be read as UTC.
    process.env.TZ = 'America/New_York';
    const { app, pages } = signedIn('olga', ['platform-operator']);
    const web = (req: express.Request) => req as WebRequest;
    app.get('/t/:tenant/signins', (req, res) => void pages.signins(web(req), res, String(req.params.tenant), req.query));
    app.get('/t/:tenant/users', (req, res) => void pages.users(web(req), res, String(req.params.tenant), req.query));
    app.post('/t/:tenant/users/:action', (req, res) => void pages.userAction(web(req), res, String(req.params.tenant), String(req.params.action), req.body));
    app.post('/t/:tenant/oath/assign', (req, res) => void pages.assignOathToken(web(req), res, String(req.params.tenant), req.body));
    app.post('/t/:tenant/oath/activate', (req, res) => void pages.activateOathToken(web(req), res, String(req.params.tenant), req.body));
    app.get('/t/:tenant/oath', (req, res) => void pages.oathTokens(web(req), res, String(req.params.tenant), req.query));
    app.get('/t/:tenant/usage', (req, res) => void pages.usage(web(req), res, String(req.params.tenant), req.query));
    app.get('/t/:tenant/fraud', (req, res) => void pages.fraud(web(req), res, String(req.params.tenant), req.query));
    app.get('/t/:tenant/blocked', (req, res) => void pages.blocked(web(req), res, String(req.params.tenant), req.query));
    app.get('/t/:tenant/audit', (req, res) => void pages.audit(web(req), res, String(req.params.tenant), req.query));
    app.post('/t/:tenant/settings', (req, res) => void pages.saveSettings(web(req), res, String(req.params.tenant), req.body));
    app.get('/t/:tenant/settings', (req, res) => void pages.settings(web(req), res, String(req.params.tenant)));
    app.post('/t/:tenant/delete', (req, res) => void pages.deleteTenant(web(req), res, String(req.params.tenant), req.body));
    app.post('/tenants/deletion', (req, res) => void pages.tenantDeletion(web(req), res, req.body));
    app.post('/tenants', (req, res) => void pages.createTenant(web(req), res, req.body));
    server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/t/${tenant}`;
  });

  after(async () => {
    process.env.TZ = zone;
    await new Promise((resolve) => server.close(resolve));
  });

  beforeEach(() => {
    calls = [];
    errors = [];
    answer = async (subject, body) => (subject === Subjects.usersGet ? { userId: body.userId, methods: [], tokens: [], devices: [], rememberedBrowsers: [], blocked: null } : { items: [] });
  });

  const signinQueries = () => calls.filter((c) => c.subject === Subjects.reportsSigninsQuery).map((c) => c.body);
  const post = (path: string, form: Record<string, string>) => fetch(`${base}/${path}`, { method: 'POST', body: new URLSearchParams(form) });

  describe('CSV export of the sign-ins', () => {
    it('sends every page, then ends the file', async () => {
      answer = async (_subject, body) => (body.cursor ? { items: [row] } : { items: [row], nextCursor: 'page-2' });
      const response = await fetch(`${base}/signins?format=csv`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/csv; charset=utf-8');
      assert.equal((await response.text()).trim().split('\n').length, 3);
      assert.deepEqual(errors, []);
    });

    it('aborts the download when a later page fails, so the browser does not keep a cut file as whole', async () => {
      answer = async (_subject, body) => {
        if (!body.cursor) return { items: [row], nextCursor: 'page-2' };
        // The reporting service does not answer in time (the first page went out meanwhile).
        await new Promise((resolve) => setTimeout(resolve, 20));
        throw new ContractError('unavailable', 'the service did not answer; try again');
      };
      const response = await fetch(`${base}/signins?format=csv`);
      assert.equal(response.status, 200);
      await assert.rejects(response.text(), 'the body ends in an error, not as a complete file');
      assert.deepEqual(signinQueries().map((q) => q.cursor), [undefined, 'page-2']);
      assert.deepEqual(errors, ['CSV export cut short']);
    });
  });

  describe('CSV export of the audit, fraud and blocked reports', () => {
    const audited = { occurredAt: '2026-11-01T10:00:00.000Z', clientId: 'platform', operator: { sub: 'olga', name: 'Olga', email: 'olga@ops.example' }, subject: Subjects.usersDelete, userId: '=HYPERLINK("http://evil.example")', outcome: 'ok' };
    const alert = {
      alertId: 'a1', occurredAt: '2026-11-01T10:00:00.000Z', userId: 'bob@contoso.com', displayName: null, email: null, phoneNumber: '+14155550123', deviceId: null, source: 'idp',
      clientIp: '203.0.113.7', application: 'VPN', challengeId: null, comment: '+1 was not me; @admin', challengeDenied: false, blocked: true, blockedUntil: '2027-01-30T10:00:00.000Z', reportedBy: 'idp-1',
      notifications: { sent: 2, failed: 1 },
    };
    const block = { occurredAt: '2026-11-01T10:00:00.000Z', action: 'block', userId: 'bob@contoso.com', ip: null, reason: '-phone stolen', source: 'admin', actor: { clientId: 'platform', operator: 'olga' }, until: null, dryRun: false };
    const cases: Array<{ path: string; subject: string; item: object; query: Record<string, string>; asked: Record<string, string>; lines: [string, string] }> = [
      {
        path: 'audit', subject: Subjects.reportsAuditQuery, item: audited, query: { operator: 'olga', subject: 'users.delete', from: '2026-11-01' },
        asked: { operator: 'olga', subject: Subjects.usersDelete, from: '2026-11-01T00:00:00.000Z' },
        lines: ['occurredAt,clientId,operator,operatorName,operatorEmail,subject,userId,outcome', `2026-11-01T10:00:00.000Z,platform,olga,Olga,olga@ops.example,${Subjects.usersDelete},"'=HYPERLINK(""http://evil.example"")",ok`],
      },
      {
        path: 'fraud', subject: Subjects.reportsFraudQuery, item: alert, query: { source: 'idp', userId: spaced },
        asked: { source: 'idp', userId: spaced },
        lines: [
          'occurredAt,userId,displayName,email,phoneNumber,source,clientIp,application,challengeId,deviceId,comment,challengeDenied,blocked,blockedUntil,reportedBy,notificationsSent,notificationsFailed,alertId',
          "2026-11-01T10:00:00.000Z,bob@contoso.com,,,'+14155550123,idp,203.0.113.7,VPN,,,'+1 was not me; @admin,false,true,2027-01-30T10:00:00.000Z,idp-1,2,1,a1",
        ],
      },
      {
        path: 'blocked', subject: Subjects.reportsBlockedQuery, item: block, query: { action: 'block', ip: ' 203.0.113.7 ' },
        asked: { action: 'block', ip: '203.0.113.7' },
        lines: ['occurredAt,action,userId,ip,reason,source,actorClientId,actorOperator,until,dryRun', "2026-11-01T10:00:00.000Z,block,bob@contoso.com,,'-phone stolen,admin,platform,olga,,false"],
      },
    ];

    for (const c of cases) {
      it(`${c.path}: every page with the page's filters, flat columns, formulas neutralised, then the file ends`, async () => {
        answer = async (_subject, body) => (body.cursor ? { items: [c.item] } : { items: [c.item], nextCursor: 'page-2' });
        const page = await (await fetch(`${base}/${c.path}?${new URLSearchParams(c.query)}`)).text();
        const link = /href="\?([^"]*format=csv)" download>CSV export</.exec(page)?.[1]?.replaceAll('&amp;', '&');
        assert.ok(link, 'the page links its CSV export');
        calls = [];
        const response = await fetch(`${base}/${c.path}?${link}`);
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('content-type'), 'text/csv; charset=utf-8');
        assert.equal(response.headers.get('content-disposition'), `attachment; filename="${c.path}-${tenant}.csv"`);
        assert.deepEqual((await response.text()).trim().split('\n'), [c.lines[0], c.lines[1], c.lines[1]]);
        assert.deepEqual(calls, [
          { subject: c.subject, body: { tenantId: tenant, ...c.asked, limit: 500 } },
          { subject: c.subject, body: { tenantId: tenant, ...c.asked, limit: 500, cursor: 'page-2' } },
        ]);
        assert.deepEqual(errors, []);
        // An unreadable date refuses the file, as the sign-ins' does: no rows the boxes seem to exclude.
        calls = [];
        const unreadable = new URLSearchParams(link);
        unreadable.set('from', '2026-02-30');
        const refused = await fetch(`${base}/${c.path}?${unreadable}`);
        assert.equal(refused.status, 400);
        assert.match(refused.headers.get('content-type') ?? '', /^text\/html/);
        assert.match(await refused.text(), /from: not a date/);
        assert.deepEqual(calls, []);
      });
    }
  });

  describe('forgetting remembered browsers', () => {
    const browsers = [
      { rememberId: 'r1', createdAt: '2026-11-01T10:00:00.000Z', until: '2026-12-01T10:00:00.000Z' },
      { rememberId: 'r2', createdAt: '2026-11-02T10:00:00.000Z', until: '2026-12-02T10:00:00.000Z' },
    ];
    const revokes = () => calls.filter((c) => c.subject === Subjects.usersRememberedRevoke).map((c) => c.body);

    it('the user page offers to forget every browser when there are some, with no browser named', async () => {
      answer = async (subject, body) => (subject === Subjects.usersGet ? { userId: body.userId, methods: [], tokens: [], devices: [], rememberedBrowsers: browsers, blocked: null } : { items: [] });
      const html = await (await fetch(`${base}/users?${new URLSearchParams({ userId: spaced })}`)).text();
      const form = /<form[^>]*id="forget-browsers"[^>]*>([\s\S]*?)<\/form>/.exec(html);
      assert.ok(form, 'the form is on the page');
      assert.match(form[0], /action="\/t\/contoso\/users\/revoke-remembered"/);
      assert.ok(!form[1]!.includes('rememberId'), 'it names no browser');
      // None remembered: nothing to forget.
      answer = async (subject, body) => (subject === Subjects.usersGet ? { userId: body.userId, methods: [], tokens: [], devices: [], rememberedBrowsers: [], blocked: null } : { items: [] });
      assert.ok(!(await (await fetch(`${base}/users?${new URLSearchParams({ userId: spaced })}`)).text()).includes('forget-browsers'));
    });

    it('sends users.remembered.revoke without rememberId, and says every browser is forgotten; one browser as before', async () => {
      const all = await post('users/revoke-remembered', { _csrf: 'x', userId: spaced });
      assert.equal(all.status, 200);
      assert.match(await all.text(), /Every remembered browser of the user is forgotten/);
      const one = await post('users/revoke-remembered', { _csrf: 'x', userId: spaced, rememberId: 'r1' });
      assert.match(await one.text(), /The browser is forgotten/);
      assert.deepEqual(revokes(), [
        { tenantId: tenant, userId: spaced },
        { tenantId: tenant, userId: spaced, rememberId: 'r1' },
      ]);
    });
  });

  describe('user ids are passed on exactly as given', () => {
    it('to every user action and the user page after it', async () => {
      for (const [action, form] of [['block', { reason: 'phone stolen' }], ['reset', {}], ['set-pin', { pin: '1234' }], ['delete-device', { deviceId: 'd1' }]] as const) {
        calls = [];
        const response = await post(`users/${action}`, { _csrf: 'x', userId: spaced, ...form });
        assert.equal(response.status, 200, action);
        assert.deepEqual(calls.map((c) => c.body.userId), [spaced, spaced, spaced], `${action}, then usersGet and the block history`);
      }
    });

    it('to the sign-ins filter, its CSV link, the user page and a token assignment', async () => {
      const page = await fetch(`${base}/signins?${new URLSearchParams({ userId: spaced })}`);
      assert.equal(page.status, 200);
      assert.equal(signinQueries()[0]?.userId, spaced);
      assert.ok((await page.text()).includes(`?${new URLSearchParams({ userId: spaced })}&amp;format=csv`), 'the CSV link keeps the space');
      await fetch(`${base}/signins?${new URLSearchParams({ userId: spaced, format: 'csv' })}`).then((r) => r.text());
      assert.equal(signinQueries()[1]?.userId, spaced);

      calls = [];
      assert.equal((await fetch(`${base}/users?${new URLSearchParams({ userId: spaced })}`)).status, 200);
      assert.deepEqual(calls.map((c) => c.body.userId), [spaced, spaced]);

      calls = [];
      assert.equal((await post('oath/assign', { _csrf: 'x', serialNumber: ' FOB-1 ', userId: spaced })).status, 200);
      assert.deepEqual(calls[0], { subject: Subjects.oathTokensAssign, body: { tenantId: tenant, serialNumber: 'FOB-1', userId: spaced } });
    });

    it('refuses a user id longer than the contract allows instead of cutting it; a search is still trimmed', async () => {
      const long = 'a'.repeat(257);
      const refused = await post('users/block', { _csrf: 'x', userId: long, reason: 'x' });
      assert.equal(refused.status, 400);
      assert.match(await refused.text(), /userId: must be at most 256 characters/);
      assert.equal((await fetch(`${base}/signins?${new URLSearchParams({ userId: long })}`)).status, 400);
      assert.deepEqual(calls, []);

      assert.equal((await fetch(`${base}/users?${new URLSearchParams({ userId: '  ', q: ' ali ' })}`)).status, 200);
      assert.deepEqual(calls, [{ subject: Subjects.usersList, body: { tenantId: tenant, query: 'ali', limit: 50 } }]);
    });
  });

  describe('sign-in date filters', () => {
    it('reads a date as its day’s start and a time without an offset as UTC', async () => {
      const accepted: Array<[string, string]> = [
        ['2026-11-01', '2026-11-01T00:00:00.000Z'],
        [' 2026-11-01 ', '2026-11-01T00:00:00.000Z'],
        ['2024-02-29', '2024-02-29T00:00:00.000Z'],
        ['2026-11-01T10:00', '2026-11-01T10:00:00.000Z'],
        ['2026-11-01T10:00:30', '2026-11-01T10:00:30.000Z'],
        ['2026-11-01T10:00:30.5', '2026-11-01T10:00:30.500Z'],
        ['2026-11-01T10:00:30.123Z', '2026-11-01T10:00:30.123Z'],
        ['2026-11-01T10:00Z', '2026-11-01T10:00:00.000Z'],
        ['2026-11-01T10:00+01:00', '2026-11-01T09:00:00.000Z'],
        ['2026-11-01T00:30-05:30', '2026-11-01T06:00:00.000Z'],
        ['2026-11-01T00:00:00+14:00', '2026-10-31T10:00:00.000Z'],
        // As the report's time column shows it.
        ['2026-11-01 10:00:00Z', '2026-11-01T10:00:00.000Z'],
      ];
      for (const [typed, iso] of accepted) {
        calls = [];
        const response = await fetch(`${base}/signins?${new URLSearchParams({ from: typed })}`);
        assert.equal(response.status, 200, typed);
        assert.equal(signinQueries()[0]?.from, iso, typed);
      }
    });

    it('sends `to` as the start of its day, as before (the report’s `to` is exclusive); an empty box is no filter', async () => {
      await fetch(`${base}/signins?${new URLSearchParams({ from: '2026-11-01', to: '2026-12-01' })}`);
      assert.deepEqual(signinQueries()[0], { tenantId: tenant, from: '2026-11-01T00:00:00.000Z', to: '2026-12-01T00:00:00.000Z', limit: 50 });
      await fetch(`${base}/signins?from=&to=%20`);
      assert.deepEqual(signinQueries()[1], { tenantId: tenant, limit: 50 });
    });

    it('refuses anything else on the page, and refuses its CSV with 400, without asking the report', async () => {
      const refused = [
        '2026-02-30', '2025-02-29', '2026-04-31', '2026-13-01', '2026-00-10', '1.11.2026', '2026-11-1', '11/01/2026', 'November 1, 2026', '2026',
        '2026-11-01T10', '2026-11-01T24:00', '2026-11-01T10:60', '2026-11-01T10:00:60', '2026-11-01T10:00:00.1234Z',
        '2026-11-01T10:00+0100', '2026-11-01T10:00+24:00', '2026-11-01T10:00+01:60', '2026-11-01T10:00 +01:00', '2026-11-01t10:00', '9'.repeat(5000),
      ];
      for (const typed of refused) {
        const page = await fetch(`${base}/signins?${new URLSearchParams({ to: typed })}`);
        assert.equal(page.status, 400, typed);
        const html = await page.text();
        assert.match(html, /class="problem" role="alert">to: not a date; write 2026-11-01 or 2026-11-01T10:00/, typed);
        assert.ok(!html.includes('format=csv') && !html.includes('class="report"'), `${typed}: no rows and no CSV link`);
        const csv = await fetch(`${base}/signins?${new URLSearchParams({ to: typed, format: 'csv' })}`);
        assert.equal(csv.status, 400, typed);
        assert.match(csv.headers.get('content-type') ?? '', /^text\/html/);
      }
      assert.deepEqual(calls, []);
      // The box still shows what was typed.
      const page = await (await fetch(`${base}/signins?${new URLSearchParams({ from: '2026-02-30', userId: spaced })}`)).text();
      assert.ok(page.includes('name="from" value="2026-02-30"') && page.includes(`name="userId" value="${spaced}"`));
    });
  });

  describe('saving the settings', () => {
    // Stored under the looser rules of older releases, refused by today's tenants.configure.
    const stored: TenantSettings = { ...defaultTenantSettings(), voice: { callerId: '+16045550123', pinMode: false }, sms: { allowedCountries: ['UK', 'SE'], blockedCountries: [] } };
    /** The form as the settings page shows it for `settings`, as a browser submits it (unchecked boxes absent). */
    const formOf = (settings: TenantSettings) =>
      Object.fromEntries(
        Object.entries(formValues(settings))
          .filter(([, v]) => v !== false)
          .map(([k, v]) => [k, v === true ? 'on' : v]),
      ) as Record<string, string>;
    const configures = () => calls.filter((c) => c.subject === Subjects.tenantsConfigure).map((c) => c.body.settings);

    beforeEach(() => {
      answer = async (subject, body) => {
        if (subject === Subjects.tenantsGet) return { tenantId: tenant, settings: stored };
        if (subject === Subjects.tenantsConfigure) return { tenantId: tenant, settings: { ...stored, ...(body.settings as object) } };
        throw new Error(`unexpected ${subject}`);
      };
    });

    it('sends only the settings the form changes, so a stored value refused today does not stop them', async () => {
      const response = await post('settings', { ...formOf(stored), maxAttempts: '3', 'lockout.threshold': '7', 'fraudAlert.enabled': '' });
      assert.equal(response.status, 200);
      assert.match(await response.text(), /Settings saved/);
      assert.deepEqual(configures(), [{ maxAttempts: 3, lockout: { threshold: 7 }, fraudAlert: { enabled: false } }]);
    });

    it('sends an array setting whole when one of its lines changes', async () => {
      await post('settings', { ...formOf(stored), 'sms.allowedCountries': 'GB\nSE' });
      assert.deepEqual(configures(), [{ sms: { allowedCountries: ['GB', 'SE'] } }]);
    });

    it('compares with what the page showed: a setting changed elsewhere meanwhile is not put back by a field left as shown', async () => {
      const shownThen = { ...stored, maxAttempts: 5 };
      const changedElsewhere = { ...stored, maxAttempts: 3 };
      answer = async (subject, body) => {
        if (subject === Subjects.tenantsGet) return { tenantId: tenant, settings: changedElsewhere };
        if (subject === Subjects.tenantsConfigure) {
          const lockout = (body.settings as { lockout?: object }).lockout;
          return { tenantId: tenant, settings: { ...changedElsewhere, lockout: { ...changedElsewhere.lockout, ...lockout } } };
        }
        throw new Error(`unexpected ${subject}`);
      };
      const page = await post('settings', { ...formOf(shownThen), _shown: shownToken(formValues(shownThen)), 'lockout.threshold': '7' });
      assert.equal(page.status, 200);
      assert.deepEqual(configures(), [{ lockout: { threshold: 7 } }]);
      // The page shown after the save carries what it shows now.
      const token = /name="_shown" value="([A-Za-z0-9_-]+)"/.exec(await page.text())?.[1];
      assert.equal(shownSettings(token)?.maxAttempts, 3);
    });

    it('asks nothing when the form changes nothing', async () => {
      const response = await post('settings', formOf(stored));
      assert.equal(response.status, 200);
      assert.match(await response.text(), /Nothing changed/);
      assert.deepEqual(configures(), []);
    });
  });

  describe('saving the settings as a tenant admin', () => {
    let adminServer: Server;
    let adminBase: string;

    before(async () => {
      // The role names a tenant nobody created.
      const { app, pages } = signedIn('adam', ['tenant-admin:ghost']);
      app.post('/t/:tenant/settings', (req, res) => void pages.saveSettings(req as unknown as WebRequest, res, String(req.params.tenant), req.body));
      adminServer = app.listen(0, '127.0.0.1');
      await new Promise((resolve) => adminServer.once('listening', resolve));
      adminBase = `http://127.0.0.1:${(adminServer.address() as AddressInfo).port}/t/ghost`;
    });

    after(async () => {
      await new Promise((resolve) => adminServer.close(resolve));
    });

    it('creates no tenant: with the page’s `_shown` in the form it still reads the tenant first, and not_found is the answer', async () => {
      answer = async (subject) => {
        if (subject === Subjects.tenantsGet) throw new ContractError('not_found', 'unknown tenant');
        // As user-settings does for the platform key the console asks with.
        if (subject === Subjects.tenantsConfigure) return { tenantId: 'ghost', settings: defaultTenantSettings() };
        throw new Error(`unexpected ${subject}`);
      };
      const shown = formValues(defaultTenantSettings());
      // The form as a browser submits it (unchecked boxes absent), one field changed.
      const form = Object.fromEntries(
        Object.entries(shown)
          .filter(([, v]) => v !== false)
          .map(([k, v]) => [k, v === true ? 'on' : String(v)]),
      );
      const response = await fetch(`${adminBase}/settings`, { method: 'POST', body: new URLSearchParams({ ...form, _csrf: 'x', _shown: shownToken(shown), maxAttempts: '3' }) });
      assert.equal(response.status, 404);
      assert.match(await response.text(), /unknown tenant/);
      assert.deepEqual(calls.map((c) => c.subject), [Subjects.tenantsGet]);
    });
  });

  describe('deleting a tenant', () => {
    const deletes = () => calls.filter((c) => c.subject === Subjects.tenantsDelete).map((c) => c.body);
    const deleting = { tenantId: tenant, state: 'deleting', deletedAt: '2026-12-05T10:00:00.000Z' };
    const deleted = { ...deleting, state: 'deleted', erasedAt: '2026-12-05T10:00:07.000Z', erased: { users: 12, hardwareTokens: 3, recordings: 2, clients: 4 } };
    const root = () => base.slice(0, -`/t/${tenant}`.length);
    let state: object;

    beforeEach(() => {
      state = deleting;
      answer = async (subject) => {
        // Unknown from the first tenants.delete on.
        if (subject === Subjects.tenantsGet) {
          if (calls.some((c) => c.subject === Subjects.tenantsDelete)) throw new ContractError('not_found', 'unknown tenant');
          return { tenantId: tenant, settings: defaultTenantSettings() };
        }
        if (subject === Subjects.tenantsDelete) return state;
        throw new Error(`unexpected ${subject}`);
      };
    });

    it('the settings page offers a platform operator a danger section that says what it does and that it cannot be undone; a mistyped id deletes nothing', async () => {
      const html = await (await fetch(`${base}/settings`)).text();
      assert.match(html, /<section class="danger-zone" id="offboard-tenant"/);
      assert.match(html, /<form method="post" action="\/t\/contoso\/delete" class="row" id="delete-tenant">/);
      assert.match(html, /name="confirm" required/);
      assert.match(html, /cannot be undone/);
      assert.match(html, /API key of the tenant is revoked/);
      for (const confirm of ['CONTOSO', ' contoso', '']) {
        const refused = await post('delete', { _csrf: 'x', confirm });
        assert.equal(refused.status, 400, confirm);
        assert.match(await refused.text(), /not deleted: type the tenant id exactly/);
      }
      assert.deepEqual(deletes(), []);
    });

    it('sends tenants.delete once the id is typed and shows its state; Check the state asks again and shows what was erased', async () => {
      const first = await post('delete', { _csrf: 'x', confirm: tenant });
      assert.equal(first.status, 200);
      const page = await first.text();
      assert.match(page, /<section class="card" id="tenant-deletion" data-state="deleting">/);
      assert.match(page, /contoso is being deleted: it is unknown to every request/);
      assert.match(page, /<form method="post" action="\/tenants\/deletion" class="row" id="deletion-state">/);
      assert.match(page, /name="tenantId" required maxlength="128" placeholder="fabrikam" value="contoso"/);
      assert.ok(!page.includes('href="/t/contoso/'), 'no link to the tenant’s pages');
      assert.deepEqual(deletes(), [{ tenantId: tenant }]);

      state = deleted;
      const again = await fetch(`${root()}/tenants/deletion`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', tenantId: tenant }) });
      assert.equal(again.status, 200);
      const done = await again.text();
      assert.match(done, /data-state="deleted"/);
      assert.match(done, /contoso is deleted: its users are erased/);
      const figures = [...done.matchAll(/<dd class="erased-([a-z-]+)">(\d+)<\/dd>/g)].map((m) => [m[1], Number(m[2])]);
      assert.deepEqual(figures, [['users', 12], ['hardware-tokens', 3], ['recordings', 2], ['clients', 4]]);
      assert.match(done, /2026-12-05 10:00:07Z/);
      assert.deepEqual(deletes(), [{ tenantId: tenant }, { tenantId: tenant }]);
    });

    it('creating the id again while it is being deleted shows the conflict tenants.configure answers, as such', async () => {
      answer = async (subject) => {
        if (subject === Subjects.tenantsGet) throw new ContractError('not_found', 'unknown tenant');
        if (subject === Subjects.tenantsConfigure) throw new ContractError('conflict', 'the tenant is being deleted; create it again once it is deleted');
        throw new Error(`unexpected ${subject}`);
      };
      const response = await fetch(`${root()}/tenants`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', tenantId: tenant }) });
      assert.equal(response.status, 409);
      const html = await response.text();
      assert.match(html, /<h1>Not possible now<\/h1>/);
      assert.match(html, /the tenant is being deleted; create it again once it is deleted/);
    });

    it('Check the state never deletes a tenant in use (one never deleted, or created again): 409, and tenants.delete is not sent', async () => {
      const response = await fetch(`${root()}/tenants/deletion`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', tenantId: tenant }) });
      assert.equal(response.status, 409);
      assert.match(await response.text(), /is a tenant in use, not one being deleted: nothing was changed/);
      assert.deepEqual(calls.map((c) => c.subject), [Subjects.tenantsGet]);
    });
  });

  describe('deleting a tenant as a tenant admin', () => {
    let adminServer: Server;
    let adminRoot: string;

    before(async () => {
      const { app, pages } = signedIn('adam', [`tenant-admin:${tenant}`]);
      const web = (req: express.Request) => req as unknown as WebRequest;
      app.get('/t/:tenant/settings', (req, res) => void pages.settings(web(req), res, String(req.params.tenant)));
      app.post('/t/:tenant/delete', (req, res) => void pages.deleteTenant(web(req), res, String(req.params.tenant), req.body));
      app.post('/tenants/deletion', (req, res) => void pages.tenantDeletion(web(req), res, req.body));
      adminServer = app.listen(0, '127.0.0.1');
      await new Promise((resolve) => adminServer.once('listening', resolve));
      adminRoot = `http://127.0.0.1:${(adminServer.address() as AddressInfo).port}`;
    });

    after(async () => {
      await new Promise((resolve) => adminServer.close(resolve));
    });

    it('gets no deletion form, and posting one anyway (or asking for the state) is refused 403 before anything is asked', async () => {
      answer = async (subject) => {
        if (subject === Subjects.tenantsGet) return { tenantId: tenant, settings: defaultTenantSettings() };
        throw new Error(`unexpected ${subject}`);
      };
      const html = await (await fetch(`${adminRoot}/t/${tenant}/settings`)).text();
      assert.match(html, /Save settings/, 'the admin changes the settings');
      assert.ok(!html.includes('delete-tenant') && !html.includes('danger-zone'), 'but sees no deletion');
      calls = [];
      const posted = await fetch(`${adminRoot}/t/${tenant}/delete`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', confirm: tenant }) });
      assert.equal(posted.status, 403);
      assert.match(await posted.text(), /only a platform operator deletes tenants/);
      const asked = await fetch(`${adminRoot}/tenants/deletion`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', tenantId: tenant }) });
      assert.equal(asked.status, 403);
      assert.deepEqual(calls, []);
    });
  });

  describe('usage for a period', () => {
    const usageQueries = () => calls.filter((c) => c.subject === Subjects.reportsUsageQuery).map((c) => c.body);
    const day = (period: string, success: number) => ({ period, authentications: { total: success + 1, success, failure: 1 }, byMethod: [{ method: 'totp', success, failure: 1 }, { method: 'sms', success: 0, failure: 0 }], enabledUsers: 7 });

    it('asks for the period and granularity typed, reads every page, shows newest first, and its CSV link downloads the same figures', async () => {
      answer = async (_subject, body) => (body.cursor ? { items: [day('2026-03-02', 4)] } : { items: [day('2026-03-01', 2)], nextCursor: 'page-2' });
      const response = await fetch(`${base}/usage?${new URLSearchParams({ from: '2026-03-01', to: '2026-03-03', granularity: 'day' })}`);
      assert.equal(response.status, 200);
      const html = await response.text();
      const asked = { tenantId: tenant, from: '2026-03-01T00:00:00.000Z', to: '2026-03-03T00:00:00.000Z', granularity: 'day', limit: 500 };
      assert.deepEqual(usageQueries(), [asked, { ...asked, cursor: 'page-2' }]);
      assert.deepEqual([...html.matchAll(/<tr>\s*<td>(\d{4}-\d{2}-\d{2})<\/td>/g)].map((m) => m[1]), ['2026-03-02', '2026-03-01'], 'every day, newest first');
      assert.ok(html.includes('name="from" value="2026-03-01"') && html.includes('<option value="day" selected>'));
      const link = /href="\?([^"]*format=csv)" download>CSV export</.exec(html)?.[1]?.replaceAll('&amp;', '&');
      assert.ok(link, 'the page links its CSV export');
      calls = [];
      const csv = await fetch(`${base}/usage?${link}`);
      assert.equal(csv.status, 200);
      assert.equal(csv.headers.get('content-type'), 'text/csv; charset=utf-8');
      assert.equal(csv.headers.get('content-disposition'), `attachment; filename="usage-${tenant}.csv"`);
      assert.deepEqual((await csv.text()).trim().split('\n'), [
        'period,authentications,succeeded,failed,sms,voice,push,totp,none,enabledUsers',
        '2026-03-01,3,2,1,0,0,0,3,0,7',
        '2026-03-02,5,4,1,0,0,0,5,0,7',
      ]);
      assert.deepEqual(usageQueries(), [asked, { ...asked, cursor: 'page-2' }]);
      assert.deepEqual(errors, []);
    });

    it('the CSV has one column per method in a fixed order, whatever order byMethod lists them in: a period’s sign-ins by it (succeeded and failed), 0 for a method it did not see', async () => {
      const period = (p: string, byMethod: Array<{ method: string; success: number; failure: number }>) => {
        const success = byMethod.reduce((n, m) => n + m.success, 0);
        const failure = byMethod.reduce((n, m) => n + m.failure, 0);
        return { period: p, authentications: { total: success + failure, success, failure }, byMethod, enabledUsers: 3 };
      };
      answer = async () => ({
        items: [
          period('2026-03-01', [{ method: 'voice', success: 1, failure: 2 }, { method: 'none', success: 0, failure: 4 }, { method: 'push', success: 5, failure: 0 }, { method: 'totp', success: 6, failure: 1 }, { method: 'sms', success: 7, failure: 8 }]),
          period('2026-03-02', [{ method: 'sms', success: 2, failure: 0 }]),
          period('2026-03-03', []),
        ],
      });
      const csv = await fetch(`${base}/usage?${new URLSearchParams({ from: '2026-03-01', to: '2026-03-04', granularity: 'day', format: 'csv' })}`);
      assert.equal(csv.status, 200);
      assert.deepEqual((await csv.text()).trim().split('\n'), [
        'period,authentications,succeeded,failed,sms,voice,push,totp,none,enabledUsers',
        '2026-03-01,34,19,15,15,3,5,7,4,3',
        '2026-03-02,2,2,0,2,0,0,0,0,3',
        '2026-03-03,0,0,0,0,0,0,0,0,3',
      ]);
      assert.deepEqual(errors, []);
    });

    it('by default the last 12 months by month, as before, and the boxes show that period', async () => {
      const response = await fetch(`${base}/usage`);
      assert.equal(response.status, 200);
      const html = await response.text();
      const [query] = usageQueries();
      assert.equal(query?.granularity, 'month');
      const days = (Date.parse(String(query?.to)) - Date.parse(String(query?.from))) / 86_400_000;
      assert.ok(days >= 334 && days <= 366 && String(query?.from).endsWith('-01T00:00:00.000Z'), `${query?.from} to ${query?.to}`);
      assert.ok(html.includes(`name="from" value="${String(query?.from).slice(0, 10)}"`) && html.includes(`name="to" value="${String(query?.to).slice(0, 10)}"`), 'the period in the boxes');
      assert.ok(html.includes('<option value="month" selected>'));
    });

    it('refuses what reports.usage.query refuses (too long a span, to before from, another granularity, an unreadable date), on the page and for the CSV, asking nothing', async () => {
      const refused: Array<[Record<string, string>, RegExp]> = [
        [{ from: '2024-01-01', to: '2026-03-01', granularity: 'day' }, /to: at most 1,440 minutes, 744 hours, 731 days or 20 years per query/],
        [{ from: '2000-01-01', to: '2026-03-01', granularity: 'month' }, /to: at most 1,440 minutes/],
        [{ from: '2026-03-01', to: '2026-02-01', granularity: 'month' }, /from must be before to/],
        [{ from: '2026-03-01', to: '2026-03-02', granularity: 'hour' }, /granularity: choose month or day/],
        [{ from: '2026-02-30', to: '2026-03-02', granularity: 'day' }, /from: not a date/],
      ];
      for (const [query, message] of refused) {
        const page = await fetch(`${base}/usage?${new URLSearchParams(query)}`);
        assert.equal(page.status, 400, JSON.stringify(query));
        const html = await page.text();
        assert.match(html, message);
        assert.ok(!html.includes('format=csv') && !html.includes('id="usage"'), 'no figures and no CSV link');
        assert.ok(html.includes(`name="from" value="${query.from}"`), 'the boxes show what was typed');
        const csv = await fetch(`${base}/usage?${new URLSearchParams({ ...query, format: 'csv' })}`);
        assert.equal(csv.status, 400);
        assert.match(csv.headers.get('content-type') ?? '', /^text\/html/);
      }
      assert.deepEqual(calls, []);
      // The longest span allowed is asked.
      assert.equal((await fetch(`${base}/usage?${new URLSearchParams({ from: '2024-01-01', to: '2026-01-01', granularity: 'day' })}`)).status, 200);
    });
  });

  describe('hardware tokens by serial number', () => {
    it('the page offers assign and activate forms taking a serial; they post to the handlers the rows use, which take any serial typed', async () => {
      const html = await (await fetch(`${base}/oath`)).text();
      const formOf = (id: string) => {
        const form = new RegExp(`<form[^>]*action="([^"]+)"[^>]*id="${id}"[^>]*>([\\s\\S]*?)</form>`).exec(html);
        assert.ok(form, `${id} is on the page`);
        return { action: form[1]!, fields: [...form[2]!.matchAll(/name="([^"]+)"/g)].map((m) => m[1]) };
      };
      const assign = formOf('oath-assign-serial');
      const activate = formOf('oath-activate-serial');
      assert.deepEqual(assign, { action: '/t/contoso/oath/assign', fields: ['_csrf', 'filter', 'serialNumber', 'userId'] });
      assert.deepEqual(activate, { action: '/t/contoso/oath/activate', fields: ['_csrf', 'filter', 'serialNumber', 'code'] });

      answer = async (subject) => (subject === Subjects.oathTokensActivate ? { serialNumber: 'FOB-9', userId: 'bob@contoso.com', active: true } : { items: [] });
      calls = [];
      const origin = new URL(base).origin;
      const activated = await fetch(`${origin}${activate.action}`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', filter: '', serialNumber: ' FOB-9 ', code: '123 456' }) });
      assert.equal(activated.status, 200);
      assert.match(await activated.text(), /Token FOB-9 is active: bob@contoso\.com signs in with its codes/);
      const assigned = await fetch(`${origin}${assign.action}`, { method: 'POST', body: new URLSearchParams({ _csrf: 'x', filter: '', serialNumber: 'FOB-10', userId: spaced }) });
      assert.equal(assigned.status, 200);
      assert.deepEqual(
        calls.filter((c) => c.subject !== Subjects.oathTokensList),
        [
          { subject: Subjects.oathTokensActivate, body: { tenantId: tenant, serialNumber: 'FOB-9', code: '123456' } },
          { subject: Subjects.oathTokensAssign, body: { tenantId: tenant, serialNumber: 'FOB-10', userId: spaced } },
        ],
      );
    });
  });

  describe('report filters', () => {
    const asked = (subject: string) => calls.filter((c) => c.subject === subject).map((c) => c.body);
    const page = (path: string, query: Record<string, string>) => fetch(`${base}/${path}?${new URLSearchParams(query)}`);

    it('fraud alerts: by user (as typed), source and period; a source the report does not know is none', async () => {
      answer = async () => ({ items: [], nextCursor: 'next-1' });
      const response = await page('fraud', { userId: spaced, source: 'phone', from: '2026-11-01', to: '2026-11-02T10:00+01:00' });
      assert.equal(response.status, 200);
      const html = await response.text();
      assert.deepEqual(asked(Subjects.reportsFraudQuery), [{ tenantId: tenant, userId: spaced, source: 'phone', from: '2026-11-01T00:00:00.000Z', to: '2026-11-02T09:00:00.000Z', limit: 50 }]);
      assert.ok(html.includes(`name="userId" value="${spaced}"`) && html.includes('<option value="phone" selected>'));
      // The next page keeps the filters.
      assert.match(html, /href="\?source=phone&amp;userId=alice%40contoso\.com\+&amp;from=2026-11-01T00%3A00%3A00\.000Z&amp;to=2026-11-02T09%3A00%3A00\.000Z&amp;cursor=next-1"/);
      calls = [];
      await page('fraud', { source: 'sms' });
      assert.deepEqual(asked(Subjects.reportsFraudQuery), [{ tenantId: tenant, limit: 50 }]);
    });

    it('blocked history: by address and action, the addresses locked now as before', async () => {
      answer = async () => ({ items: [] });
      assert.equal((await page('blocked', { ip: ' 2001:db8:1:2::/64 ', action: 'ip_lock' })).status, 200);
      assert.deepEqual(asked(Subjects.reportsBlockedQuery), [{ tenantId: tenant, ip: '2001:db8:1:2::/64', action: 'ip_lock', limit: 50 }]);
      assert.equal(asked(Subjects.fraudIpsList).length, 1);
    });

    it('audit log: by API client and user; an unreadable date is refused on the page and nothing is asked', async () => {
      answer = async () => ({ items: [] });
      await page('audit', { clientId: 'idp-1', userId: 'bob@contoso.com' });
      assert.deepEqual(asked(Subjects.reportsAuditQuery), [{ tenantId: tenant, clientId: 'idp-1', userId: 'bob@contoso.com', limit: 50 }]);
      calls = [];
      const refused = await page('audit', { clientId: 'idp-1', from: '1.11.2026' });
      assert.equal(refused.status, 400);
      const html = await refused.text();
      assert.match(html, /from: not a date/);
      assert.ok(html.includes('name="clientId" value="idp-1"') && html.includes('name="from" value="1.11.2026"'));
      assert.deepEqual(calls, []);
    });

    it('audit log: by operator (their sub) and action (as the page shows it, or whole); the rows link to both filters; the next page keeps them', async () => {
      answer = async () => ({
        items: [{ occurredAt: '2026-11-01T10:00:00.000Z', clientId: 'platform', operator: { sub: 'olga 1', name: 'Olga' }, subject: Subjects.usersDelete, userId: 'bob@contoso.com', outcome: 'ok' }],
        nextCursor: 'next-1',
      });
      const html = await (await page('audit', { operator: ' olga 1 ', subject: ' users.delete ' })).text();
      assert.deepEqual(asked(Subjects.reportsAuditQuery), [{ tenantId: tenant, operator: 'olga 1', subject: Subjects.usersDelete, limit: 50 }]);
      assert.ok(html.includes('name="operator" value="olga 1"') && html.includes('name="subject" value="users.delete"'), 'the boxes show the filters');
      assert.ok(html.includes('href="?operator=olga%201"') && html.includes(`href="?subject=${encodeURIComponent(Subjects.usersDelete)}"`), 'the operator and the action link to their filters');
      assert.match(html, /href="\?operator=olga\+1&amp;subject=users\.delete&amp;cursor=next-1"/);
      calls = [];
      await page('audit', { subject: Subjects.usersDelete, operator: '' });
      assert.deepEqual(asked(Subjects.reportsAuditQuery), [{ tenantId: tenant, subject: Subjects.usersDelete, limit: 50 }]);
    });

    it('audit log: an action outside the API (the master key tool’s mfa.tool.rewrap) is asked as it is, not under the API’s prefix', async () => {
      answer = async () => ({ items: [{ occurredAt: '2026-11-01T10:00:00.000Z', clientId: 'rewrap.js', subject: 'mfa.tool.rewrap', outcome: 'ok' }] });
      const html = await (await page('audit', { subject: 'mfa.tool.rewrap' })).text();
      assert.deepEqual(asked(Subjects.reportsAuditQuery), [{ tenantId: tenant, subject: 'mfa.tool.rewrap', limit: 50 }]);
      assert.ok(html.includes(`href="?subject=${encodeURIComponent('mfa.tool.rewrap')}"`), 'its row links to it');
    });
  });

  describe('finding users by method', () => {
    const lists = () => calls.filter((c) => c.subject === Subjects.usersList).map((c) => c.body);

    it('sends the method chosen (or none) with the search, offers every method users.list takes, and keeps the choice on the next page', async () => {
      answer = async () => ({ items: [{ userId: 'bob@contoso.com', displayName: null, blocked: false, methods: [] }], nextCursor: 'next-1' });
      const html = await (await fetch(`${base}/users?${new URLSearchParams({ q: 'bo', method: 'none' })}`)).text();
      assert.deepEqual(lists(), [{ tenantId: tenant, query: 'bo', method: 'none', limit: 50 }]);
      const select = /<select name="method"[^>]*>([\s\S]*?)<\/select>/.exec(html);
      assert.ok(select, 'the filter is on the page');
      assert.deepEqual([...select[1]!.matchAll(/<option value="([^"]*)"/g)].map((m) => m[1]), ['', 'sms', 'voice', 'push', 'totp', 'none']);
      assert.match(select[1]!, /<option value="none" selected>/);
      assert.match(html, /href="\?q=bo&amp;method=none&amp;cursor=next-1"/);
      // Any other value is no filter.
      calls = [];
      await fetch(`${base}/users?${new URLSearchParams({ method: 'email' })}`);
      assert.deepEqual(lists(), [{ tenantId: tenant, limit: 50 }]);
    });
  });

  describe('app passwords on the user page', () => {
    const listed = [
      { appPasswordId: 'ap-1', name: 'Outlook 2010', createdAt: '2026-11-01T10:00:00.000Z' },
      { appPasswordId: 'ap-2', name: null, createdAt: '2026-11-02T10:00:00.000Z' },
    ];
    const deletes = () => calls.filter((c) => c.subject === Subjects.usersAppPasswordsDelete).map((c) => c.body);

    it('lists each with what it is for and when it was created, a delete form naming it on its row; none listed, no table', async () => {
      answer = async (subject, body) => (subject === Subjects.usersGet ? { userId: body.userId, methods: [], tokens: [], devices: [], rememberedBrowsers: [], blocked: null, appPasswords: 2, appPasswordList: listed } : { items: [] });
      const html = await (await fetch(`${base}/users?${new URLSearchParams({ userId: spaced })}`)).text();
      const rows = [...html.matchAll(/<tr data-app-password="([^"]+)"><td>([^<]*)<\/td>([\s\S]*?)<\/tr>/g)];
      assert.deepEqual(rows.map((r) => [r[1], r[2]]), [['ap-1', 'Outlook 2010'], ['ap-2', '—']]);
      for (const [i, row] of rows.entries()) {
        assert.match(row[3]!, /action="\/t\/contoso\/users\/delete-app-passwords"/);
        assert.ok(row[3]!.includes(`name="appPasswordId" value="${listed[i]!.appPasswordId}"`), 'the row’s form names its app password');
      }
      assert.match(html, /id="delete-app-passwords"/, 'and delete all');
      answer = async (subject, body) => (subject === Subjects.usersGet ? { userId: body.userId, methods: [], tokens: [], devices: [], rememberedBrowsers: [], blocked: null, appPasswords: 0, appPasswordList: [] } : { items: [] });
      assert.ok(!(await (await fetch(`${base}/users?${new URLSearchParams({ userId: spaced })}`)).text()).includes('app-passwords'));
    });

    it('sends users.apppasswords.delete with the row’s id, or without one for all, and says which', async () => {
      answer = async (subject, body) => (subject === Subjects.usersGet ? { userId: body.userId, methods: [], tokens: [], devices: [], rememberedBrowsers: [], blocked: null, appPasswords: 1, appPasswordList: listed.slice(1) } : { userId: body.userId, deleted: 1 });
      assert.match(await (await post('users/delete-app-passwords', { _csrf: 'x', userId: spaced, appPasswordId: 'ap-1' })).text(), /The app password is deleted/);
      assert.match(await (await post('users/delete-app-passwords', { _csrf: 'x', userId: spaced })).text(), /Every app password of the user is deleted/);
      assert.deepEqual(deletes(), [
        { tenantId: tenant, userId: spaced, appPasswordId: 'ap-1' },
        { tenantId: tenant, userId: spaced },
      ]);
    });
  });
});
