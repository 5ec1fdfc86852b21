import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash, pbkdf2Sync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import pg from 'pg';
import { Headers, InternalSubjects, OATH_CSV_HEADER, OATH_ERRORS_CSV_HEADER, Subjects, type OathTokenItem } from '@mfa/contracts';
import { requestJson } from '@mfa/messaging';
import { DeviceClient } from '@mfa/authenticator';
import { base32Decode, base32Encode, loadKeyring, totp } from '@mfa/crypto';
import { InternalRequests } from '@mfa/service-kit';
import { eventually, freePort, itWith, repoRoot, startStack, TestOidcProvider, testDatabaseUrl, testEnv, toneWav, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'];
/** UPDATE_SCREENSHOTS=1 writes the pages' screenshots into docs/screenshots (committed); otherwise a temporary folder. */
const SHOTS = process.env.UPDATE_SCREENSHOTS === '1' ? join(repoRoot, 'docs', 'screenshots') : mkdtempSync(join(tmpdir(), 'console-shots-'));

/**
 * A PSKC file (RFC 6030) of one TOTP key encrypted with a password (§6.2: PBKDF2-SHA1, AES-128-CBC
 * with the IV first), about `padding` bytes of XML comments in front of it (a vendor's file of many MB).
 */
function passwordPskc(serial: string, secret: Buffer, password: string, padding = 0): string {
  const salt = randomBytes(16);
  const key = pbkdf2Sync(password, salt, 1000, 16, 'sha1');
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-128-cbc', key, iv);
  const value = Buffer.concat([iv, cipher.update(secret), cipher.final()]).toString('base64');
  return `<?xml version="1.0" encoding="UTF-8"?>
${`<!--${' '.repeat(1000)}-->\n`.repeat(Math.ceil(padding / 1008))}<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"
    xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#">
  <pskc:EncryptionKey>
    <xenc11:DerivedKey>
      <xenc11:KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
        <pkcs5:PBKDF2-params><Salt><Specified>${salt.toString('base64')}</Specified></Salt><IterationCount>1000</IterationCount><KeyLength>16</KeyLength></pkcs5:PBKDF2-params>
      </xenc11:KeyDerivationMethod>
    </xenc11:DerivedKey>
  </pskc:EncryptionKey>
  <pskc:KeyPackage>
    <pskc:DeviceInfo><pskc:Manufacturer>Acme</pskc:Manufacturer><pskc:SerialNo>${serial}</pskc:SerialNo><pskc:Model>Card 8</pskc:Model></pskc:DeviceInfo>
    <pskc:Key Id="${serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <pskc:AlgorithmParameters><pskc:Suite>HMAC-SHA256</pskc:Suite><pskc:ResponseFormat Length="8" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret><pskc:EncryptedValue><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/><xenc:CipherData><xenc:CipherValue>${value}</xenc:CipherValue></xenc:CipherData></pskc:EncryptedValue></pskc:Secret>
        <pskc:TimeInterval><pskc:PlainValue>60</pskc:PlainValue></pskc:TimeInterval>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>
</pskc:KeyContainer>
`;
}

/**
 * The operators' console in a real browser (Debian's Chromium driven by playwright-core), signed
 * in through a real OpenID provider (oidc-provider), against the whole stack with API keys on.
 */
describe('console: the operators’ web console in a real browser', { skip: !existsSync(CHROMIUM) && !process.env.CI ? 'no Chromium (apt-get install chromium)' : false }, () => {
  const platformKey = randomBytes(36).toString('base64url');
  const tenantA = uniqueTenant('console-a');
  const tenantB = uniqueTenant('console-b');
  let consoleUrl: string;
  let oidc: TestOidcProvider;
  let stack: Stack;
  let nc: NatsConnection;
  /** Error-level lines the console wrote. */
  const consoleErrors: string[] = [];
  let browser: Browser;
  const ask = (subject: string, body: unknown) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${platformKey}` } });
  const userA = uniqueUser('alice');
  const hostile = `<script>alert("x")</script><img src=x onerror=alert(1)>`;
  let secretA: Uint8Array;
  /** The time of the last TOTP step tenant A's user signed in with (a step is accepted once). */
  let lastStepA = 0;

  before(async () => {
    const port = await freePort();
    consoleUrl = `http://127.0.0.1:${port}`;
    // The device API where user-settings says it is: enrolment's QR codes lead to it.
    const devicePort = await freePort();
    oidc = new TestOidcProvider(`${consoleUrl}/auth/callback`, {
      ops: { name: 'Olga Operator', email: 'olga@ops.example', roles: ['platform-operator'] },
      'admin-a': { name: 'Anna Admin', roles: [`tenant-admin:${tenantA}`] },
      'reader-a': { name: 'Rolf Reader', roles: [`tenant-reader:${tenantA}`] },
      nobody: { roles: ['something-else'] },
    });
    await oidc.start();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'fraud', 'reporting', 'console'],
      env: {
        NODE_ENV: 'test',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        ...oidc.env(),
      },
      serviceEnv: {
        console: { CONSOLE_PORT: String(port) },
        'auth-challenge': { HTTP_PORT: String(devicePort) },
        'user-settings': { DEVICE_API_PUBLIC_URL: `http://127.0.0.1:${devicePort}/device` },
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) {
          if (service === 'console') consoleErrors.push(line);
          process.stderr.write(`[${service}] ${line}\n`);
        }
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connect({ servers: testEnv.natsUrl, name: 'e2e-console' });
    for (const tenantId of [tenantA, tenantB]) assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: {} })).error, undefined);
    // Tenant A's data: a user with an authenticator app and sign-ins, a hostile display name, a fraud alert.
    await ask(Subjects.usersRegister, { tenantId: tenantA, userId: userA, displayName: hostile, phoneNumber: '+14155550111' });
    const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenantA, userId: userA });
    secretA = base32Decode(String(enrolled.secret));
    // One reference time: the approval below uses the step after the activation's, whatever the clock does meanwhile.
    const t0 = Date.now();
    lastStepA = t0 + 30_000;
    await ask(Subjects.totpActivate, { tenantId: tenantA, userId: userA, tokenId: enrolled.tokenId, code: totp(secretA, t0) });
    // Two sign-ins in the report: one approved (the next time step: activation used this one), one
    // through the RADIUS front denied after its five wrong codes. (A challenge still pending is not
    // reported until it expires.)
    const approved = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'totp', clientIp: '198.51.100.9', application: 'VPN' });
    assert.equal((await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId: approved.challengeId, code: totp(secretA, t0 + 30_000) })).status, 'approved');
    const radius = { serverName: 'vpn-gateway', serverIp: '192.0.2.10' };
    const denied = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'totp', clientIp: '198.51.100.9', application: 'VPN', context: { radius } });
    for (let n = 0; n < 5; n++) await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId: denied.challengeId, code: `00000${n}` });
    const victim = uniqueUser('victim');
    await ask(Subjects.usersRegister, { tenantId: tenantA, userId: victim, phoneNumber: '+14155550112' });
    await ask(Subjects.fraudReport, { tenantId: tenantA, userId: victim, source: 'idp', comment: hostile });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  after(async () => {
    await browser?.close();
    await nc?.drain();
    await stack?.stop();
    await oidc?.stop();
  });

  /** Signs in through the identity provider's own login and consent pages. */
  async function signIn(login: string): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext({ acceptDownloads: true });
    const page = await context.newPage();
    page.on('dialog', () => assert.fail('a script ran from user-supplied text'));
    await page.goto(`${consoleUrl}/`);
    await page.waitForURL((url) => url.origin === new URL(oidc.issuer).origin);
    await page.fill('input[name=login]', login);
    await page.fill('input[name=password]', 'any');
    await page.click('button[type=submit]');
    // Consent, the first time this account meets the console.
    if (new URL(page.url()).origin === new URL(oidc.issuer).origin) await page.click('button[type=submit]');
    await page.waitForURL((url) => url.origin === consoleUrl || url.origin === new URL(oidc.issuer).origin, { waitUntil: 'load' });
    return { context, page };
  }

  const tenantPage = (page: Page, tenantId: string, path: string) => page.goto(`${consoleUrl}/t/${encodeURIComponent(tenantId)}/${path}`);

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'a platform operator signs in, opens every page, blocks and unblocks a user, changes a setting that then applies, exports a CSV', async () => {
    const { context, page } = await signIn('ops');
    assert.equal(new URL(page.url()).pathname, '/tenants');
    await page.fill('input[name=tenantId]', tenantA);
    await page.click('main form button[type=submit]');
    await page.waitForURL(/\/overview$/);
    assert.match(await page.textContent('h1') ?? '', /Overview/);
    await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });

    // Every page answers, with its heading.
    const pages: Array<[string, RegExp]> = [
      ['signins', /Sign-ins/], ['users', /Users/], ['fraud', /Fraud alerts/], ['blocked', /Blocked users and addresses/],
      ['usage', /Usage and billing/], ['settings', /Tenant settings/], ['clients', /API clients/], ['audit', /Audit log/],
    ];
    for (const [path, heading] of pages) {
      const response = await tenantPage(page, tenantA, path);
      assert.equal(response?.status(), 200, path);
      assert.match(await page.textContent('h1') ?? '', heading, path);
    }

    // The sign-in report: rows, a detail view; hostile text shown as text.
    await tenantPage(page, tenantA, 'signins');
    await eventually(async () => ((await page.reload(), await page.locator('table.report tbody tr td a').count()) >= 2 ? true : undefined), 20_000, 'two sign-ins in the report');
    await page.screenshot({ path: join(SHOTS, 'signins.png'), fullPage: true });
    assert.ok((await page.content()).includes('&lt;script&gt;alert("x")&lt;/script&gt;'), 'the display name is escaped');
    assert.deepEqual((await page.locator('table.report tbody td.via').allTextContents()).map((t) => t.trim()).sort(), ['', 'RADIUS vpn-gateway'], 'the RADIUS sign-in says so');
    await page.click('table.report tbody tr:first-child td:first-child a');
    assert.match(await page.textContent('h1') ?? '', new RegExp(`Sign-in of ${userA}`));

    // CSV export: the same rows.
    await tenantPage(page, tenantA, `signins?userId=${encodeURIComponent(userA)}`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('a[download]')]);
    const csv = readFileSync((await download.path())!, 'utf8').trim().split('\n');
    assert.equal(csv[0], 'occurredAt,userId,displayName,email,phoneNumber,authMethod,result,resultDetail,clientIp,application,serverName,serverIp,challengeId,via,deviceId');
    assert.equal(csv.length - 1, 2);
    assert.ok(csv.slice(1).every((row) => row.includes(userA) && row.includes('198.51.100.9') && row.includes('VPN')));
    assert.ok(csv.slice(1).some((row) => row.includes('MFA successfully completed')));
    assert.ok(csv.slice(1).some((row) => row.includes('MFA denied; invalid verification code') && row.includes(',vpn-gateway,192.0.2.10,') && row.endsWith(',radius,')));
    assert.ok(csv.slice(1).some((row) => row.includes('MFA successfully completed') && row.endsWith(',nats,')));

    // Find the user by the start of their id, then open them.
    await tenantPage(page, tenantA, 'users');
    await page.fill('#user-search input[name=q]', userA.slice(0, 8).toUpperCase());
    await page.click('#user-search button[type=submit]');
    await page.click(`#users-found a:text-is("${userA}")`);
    assert.match(await page.textContent('h2') ?? '', /script/);
    // Block, see the start denied; unblock, see it pending.
    await tenantPage(page, tenantA, `users?userId=${encodeURIComponent(userA)}`);
    await page.screenshot({ path: join(SHOTS, 'user.png'), fullPage: true });
    await page.fill('input[name=reason]', 'phone reported stolen <b>');
    await page.click('form[action$="/users/block"] button[type=submit]');
    assert.match(await page.textContent('#block-status') ?? '', /Blocked/);
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'totp' })).reason, 'user_blocked');
    await page.fill('input[name=reason]', 'found it');
    await page.click('form[action$="/users/unblock"] button[type=submit]');
    assert.match(await page.textContent('#block-status') ?? '', /Not blocked/);
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'totp' })).status, 'pending');

    // The default method, chosen on the page; app passwords, deleted on the page.
    await page.selectOption('#default-method select[name=method]', 'sms');
    await page.click('#default-method button[type=submit]');
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).defaultMethod, 'sms');
    await ask(Subjects.tenantsConfigure, { tenantId: tenantA, settings: { appPasswords: { allowed: true } } });
    const oldClient = await ask(Subjects.usersAppPasswordsCreate, { tenantId: tenantA, userId: userA, name: 'old mail client' });
    const scanner = await ask(Subjects.usersAppPasswordsCreate, { tenantId: tenantA, userId: userA, name: 'scanner' });
    await ask(Subjects.usersAppPasswordsCreate, { tenantId: tenantA, userId: userA });
    await tenantPage(page, tenantA, `users?userId=${encodeURIComponent(userA)}`);
    // Each one listed (what it is for, when it was created, its id), and deleted on its own row.
    const rows = async () => page.$$eval('#app-passwords tbody tr', (trs) => trs.map((tr) => [tr.getAttribute('data-app-password'), tr.querySelector('td')?.textContent?.trim()]));
    assert.deepEqual((await rows()).slice(0, 2), [[oldClient.appPasswordId, 'old mail client'], [scanner.appPasswordId, 'scanner']]);
    assert.equal((await rows())[2]?.[1], '—', 'one without a name');
    await page.click(`#app-passwords tr[data-app-password="${String(scanner.appPasswordId)}"] button[type=submit]`);
    assert.match(await page.textContent('.notice') ?? '', /The app password is deleted/);
    assert.deepEqual(
      ((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).appPasswordList as Array<{ appPasswordId: string }>).map((a) => a.appPasswordId).includes(String(scanner.appPasswordId)),
      false,
    );
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).appPasswords, 2, 'the others stay');
    await page.click('#delete-app-passwords button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /Every app password/);
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).appPasswords, 0);
    assert.equal(await page.$('#app-passwords'), null, 'no table without app passwords');
    // A remembered browser, shown on the page and forgotten there: its token no longer skips MFA.
    await ask(Subjects.tenantsConfigure, { tenantId: tenantA, settings: { rememberMfa: { enabled: true, days: 30 } } });
    const remembering = await eventually(async () => {
      const start = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'totp', context: { rememberDevice: true } });
      return start.status === 'pending' ? start : undefined;
    }, 10_000, 'a pending start');
    // A time step after every one used so far (the approval in the set-up used the step after t0's),
    // and at most one ahead of the clock's (the code window): wait for the clock to reach the used one.
    while (Math.floor(Date.now() / 30_000) < Math.floor(lastStepA / 30_000)) await new Promise((r) => setTimeout(r, 500));
    const at = Math.max(Date.now(), lastStepA + 30_000);
    const approvedRemembering = await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId: remembering.challengeId, code: totp(secretA, at) });
    assert.equal(approvedRemembering.status, 'approved', JSON.stringify(approvedRemembering));
    const rememberToken = String(approvedRemembering.rememberToken);
    await eventually(async () => {
      const start = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, context: { rememberToken } });
      return start.reason === 'remembered_device' ? true : undefined;
    }, 10_000, 'the browser remembered');
    await tenantPage(page, tenantA, `users?userId=${encodeURIComponent(userA)}`);
    assert.equal(await page.locator('#remembered tbody tr form').count(), 1);
    await page.click('#remembered tbody tr form button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /browser is forgotten/);
    assert.equal(await page.locator('#remembered tbody tr form').count(), 0);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).rememberedBrowsers, []);
    const forgotten = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, context: { rememberToken } });
    assert.equal(forgotten.status, 'pending', 'the forgotten browser asks for MFA again');
    // A voice PIN set on the page: kept as a hash, checked as a call would check it.
    await page.fill('#set-pin input[name=pin]', '8642');
    await page.click('#set-pin button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /voice PIN is set/);
    assert.deepEqual(await new InternalRequests(nc, loadKeyring({ NODE_ENV: 'test' }).keyring).request(InternalSubjects.pinVerify, { tenantId: tenantA, userId: userA, pin: '8642' }, { timeoutMs: 10_000 }), { valid: true, pinSet: true });
    assert.ok(!(await page.content()).includes('8642'), 'the PIN is never shown back');
    // A token deleted on the page: a second one, still pending, goes; the active one stays.
    const pending = await ask(Subjects.totpEnroll, { tenantId: tenantA, userId: userA, label: 'spare <i>' });
    await tenantPage(page, tenantA, `users?userId=${encodeURIComponent(userA)}`);
    await page.click(`tr:has(code:text-is("${String(pending.tokenId)}")) form[action$="/users/delete-token"] button[type=submit]`);
    assert.match(await page.textContent('.notice') ?? '', /token is deleted/);
    const tokens = (await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).tokens as Array<{ tokenId: string; state: string }>;
    assert.deepEqual(tokens.map((t) => t.state), ['active']);
    // Reset MFA on the page: the user must register again; then back as it was for the rest.
    await page.click('#reset-mfa button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /must register again/);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).methods, []);
    await ask(Subjects.usersRegister, { tenantId: tenantA, userId: userA, phoneNumber: '+14155550111' });
    // A setting changed on the page applies to the next challenge: one attempt per challenge.
    await tenantPage(page, tenantA, 'settings');
    await page.screenshot({ path: join(SHOTS, 'settings.png'), fullPage: true });
    await page.fill('input[name=maxAttempts]', '1');
    await page.click('form.settings button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /Settings saved/);
    const reply = await eventually(async () => {
      const start = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, method: 'sms' });
      const verified = await ask(Subjects.challengeVerify, { tenantId: tenantA, challengeId: start.challengeId, code: '000000' });
      return verified.status === 'denied' ? verified : undefined;
    }, 10_000, 'the new attempt limit in force');
    assert.equal(reply.reason, 'too_many_attempts');
    // Trusted IPs set on the page: a sign-in from them skips MFA; a private range in cloud mode is refused.
    await page.fill('textarea[name="trustedIps.ranges"]', '8.8.4.0/24');
    await page.click('form.settings button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /Settings saved/);
    const bypassed = await eventually(async () => {
      const start = await ask(Subjects.challengeStart, { tenantId: tenantA, userId: userA, clientIp: '8.8.4.4' });
      return start.status === 'approved' ? start : undefined;
    }, 10_000, 'the trusted range in force');
    assert.equal(bypassed.reason, 'trusted_ip');
    await page.fill('textarea[name="trustedIps.ranges"]', '10.0.0.0/8');
    await page.click('form.settings button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /trustedIps/);
    // A value the contract refuses is shown, not saved.
    await page.fill('input[name=maxAttempts]', '99');
    await page.click('form.settings button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /maxAttempts/);

    // Fraud alerts and the blocked history show what happened; the hostile comment as text.
    await tenantPage(page, tenantA, 'fraud');
    assert.equal(await page.locator('table.report tbody tr').count(), 1);
    await page.screenshot({ path: join(SHOTS, 'fraud.png'), fullPage: true });
    await tenantPage(page, tenantA, 'blocked');
    await eventually(async () => ((await page.reload(), (await page.textContent('main')) ?? '').includes('found it') ? true : undefined), 20_000, 'the unblock in the history');
    await page.screenshot({ path: join(SHOTS, 'blocked.png'), fullPage: true });

    // An API key created on the page is shown once; the audit log names the operator.
    await tenantPage(page, tenantA, 'clients');
    await page.fill('input[name=name]', 'console test');
    await page.check('input[name=scope_reports]');
    await page.click('main form.row button[type=submit]');
    assert.match(await page.textContent('#new-api-key') ?? '', /^mfak\./);
    await tenantPage(page, tenantA, 'audit');
    await eventually(async () => ((await page.reload(), (await page.textContent('main')) ?? '').includes('Olga Operator') ? true : undefined), 20_000, 'the operator in the audit log');
    assert.ok((await page.textContent('main'))!.includes('users.block'));
    // A change to a user's methods made on the page is the operator's too, though its subject is of the users scope.
    await eventually(async () => ((await page.reload(), (await page.textContent('main')) ?? '').includes('users.methods.default') ? true : undefined), 20_000, 'the default method chosen on the page');
    await page.screenshot({ path: join(SHOTS, 'audit.png'), fullPage: true });
    await context.close();
  }, { timeout: 180_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'telephony on the pages: caller ID, PIN mode and SMS country rules apply; a recording uploads with progress, plays back, is refused when it lies, and is deleted', async () => {
    const { context, page } = await signIn('ops');
    await tenantPage(page, tenantB, 'settings');
    // A caller ID outside the US is refused; a US one is saved. PIN mode on. SMS only to Sweden.
    await page.fill('input[name="voice.callerId"]', '+46701234567');
    await page.click('form.settings button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /callerId/);
    await page.fill('input[name="voice.callerId"]', '+18553308653');
    await page.check('input[name="voice.pinMode"]');
    await page.fill('textarea[name="sms.allowedCountries"]', 'SE');
    await page.click('form.settings button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /Settings saved/);
    const settings = (await ask(Subjects.tenantsGet, { tenantId: tenantB })).settings as { voice: { callerId: string; pinMode: boolean }; sms: { allowedCountries: string[] } };
    assert.deepEqual([settings.voice.callerId, settings.voice.pinMode, settings.sms.allowedCountries], ['+18553308653', true, ['SE']]);
    const caller = uniqueUser('caller');
    await ask(Subjects.usersRegister, { tenantId: tenantB, userId: caller, phoneNumber: '+14155550113' });
    const refusedStart = await eventually(async () => {
      const start = await ask(Subjects.challengeStart, { tenantId: tenantB, userId: caller, method: 'sms' });
      return start.reason === 'country_not_allowed' ? start : undefined;
    }, 10_000, 'the country rule in force');
    assert.equal(refusedStart.status, 'registration_required');

    // Voice messages: a WAV uploaded through the page, with its progress bar.
    await tenantPage(page, tenantB, 'voice');
    assert.match(await page.textContent('h1') ?? '', /Voice messages/);
    assert.equal(await page.locator('#recordings-none').count(), 1);
    const wav = toneWav(1.5);
    await page.selectOption('#voice-upload select[name=type]', 'greetingPin');
    await page.fill('#voice-upload input[name=language]', 'sv');
    await page.setInputFiles('#voice-upload input[name=file]', { name: 'hälsning.wav', mimeType: 'audio/wav', buffer: wav });
    await page.click('#voice-upload button[type=submit]');
    // Read in the page, every 50 ms until the notice is there: the page reloads itself 600 ms
    // after showing it, which a loaded machine can take before a second round trip from here.
    const uploaded = await page.waitForFunction(
      () => {
        const doc = (globalThis as unknown as { document: { querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null } }).document;
        const notice = doc.querySelector('#upload-result.notice');
        return notice ? { text: notice.textContent ?? '', progress: doc.querySelector('#upload-progress')?.getAttribute('value') ?? null } : undefined;
      },
      undefined,
      { polling: 50 },
    );
    const { text, progress } = (await uploaded.jsonValue()) as { text: string; progress: string | null };
    assert.match(text, /Saved: greetingPin in sv, wav, 1\.5 s/);
    assert.equal(progress, '100');
    await page.waitForSelector('#recordings tr[data-type="greetingPin"][data-language="sv"]');
    await page.screenshot({ path: join(SHOTS, 'voice.png'), fullPage: true });
    // It plays back: the browser loads the audio and reads its length.
    const duration = await page.$eval('#recordings tr[data-type="greetingPin"] audio', (audio) =>
      new Promise<number>((resolve, reject) => {
        // The page's <audio> element (the DOM's types are not in this project's compilation).
        const a = audio as unknown as { readyState: number; duration: number; error: { code: number } | null; load(): void; addEventListener(type: string, listener: () => void): void };
        if (a.readyState >= 1) return resolve(a.duration);
        a.addEventListener('loadedmetadata', () => resolve(a.duration));
        a.addEventListener('error', () => reject(new Error(`audio error ${a.error?.code}`)));
        a.load();
      }),
    );
    assert.ok(Math.abs(duration - 1.5) < 0.05, `the browser reads ${duration} s`);
    const played = await page.request.get(`${consoleUrl}/t/${encodeURIComponent(tenantB)}/voice/play/greetingPin/sv`);
    assert.equal(played.headers()['content-type'], 'audio/wav');
    assert.deepEqual(Buffer.from(await played.body()), wav);
    assert.deepEqual(((await ask(Subjects.voiceMessagesList, { tenantId: tenantB })).messages as Array<{ type: string }>).map((m) => m.type), ['greetingPin']);
    // A file that lies about its type: refused, shown, nothing saved.
    await page.selectOption('#voice-upload select[name=type]', 'retryPin');
    await page.setInputFiles('#voice-upload input[name=file]', { name: 'retry.mp3', mimeType: 'audio/mpeg', buffer: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>') });
    await page.click('#voice-upload button[type=submit]');
    await page.waitForSelector('#upload-result.problem');
    assert.match(await page.textContent('#upload-result') ?? '', /not a WAV or MP3 recording/);
    // Tenant A's admin cannot hear tenant B's recordings.
    const admin = await signIn('admin-a');
    assert.equal((await admin.page.request.get(`${consoleUrl}/t/${encodeURIComponent(tenantB)}/voice/play/greetingPin/sv`)).status(), 403);
    await admin.context.close();
    // Deleted on the page.
    await page.click('#recordings tr[data-type="greetingPin"] form button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /recording is deleted/);
    assert.equal(await page.locator('#recordings-none').count(), 1);
    assert.deepEqual((await ask(Subjects.voiceMessagesList, { tenantId: tenantB })).messages, []);
    await context.close();
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium', 'authenticator'] }, "a user's authenticator apps: enrolled from the page with a QR code, activated by the reference authenticator, listed with their last use, revoked", async () => {
    const { context, page } = await signIn('ops');
    const userId = uniqueUser('pushy');
    await ask(Subjects.usersRegister, { tenantId: tenantB, userId, displayName: 'Pushy' });
    await tenantPage(page, tenantB, `users?userId=${encodeURIComponent(userId)}`);
    assert.match(await page.textContent('#devices') ?? '', /No authenticator app/);
    await page.click('#push-enroll button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /activation code is ready/);
    // The QR code is an image the browser decodes (a PNG data URL the CSP allows).
    const width = await page.$eval('#push-enrolment img', (img) => (img as unknown as { naturalWidth: number }).naturalWidth);
    assert.ok(width > 100, `the QR code is drawn (${width} px)`);
    const url = (await page.textContent('#activation-url')) ?? '';
    assert.match(url, /\/device\/v1\/activate\?code=[0-9A-Z-]{19}$/);
    await page.screenshot({ path: join(SHOTS, 'push-enrolment.png'), fullPage: true });
    // The reference authenticator scans it (the URL), activates, and answers a push.
    const app = await DeviceClient.activate(url, { name: 'Pixel of Pushy', algorithm: 'Ed25519' });
    const start = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenantB, userId, method: 'push', application: 'Console test' });
      return reply.status === 'pending' ? reply : undefined;
    }, 10_000, 'a pending push');
    assert.equal((await app.answer(String(start.challengeId), 'approve', String(start.numberMatch))).status, 'approved');
    // The sign-in's page names the app whose answer approved it.
    await eventually(async () => {
      await tenantPage(page, tenantB, `signins/${encodeURIComponent(String(start.challengeId))}`);
      return (await page.locator('#device').count()) > 0 ? true : undefined;
    }, 20_000, 'the approving app on the sign-in page');
    assert.match(await page.textContent('#device') ?? '', new RegExp(app.identity.deviceId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    await tenantPage(page, tenantB, `users?userId=${encodeURIComponent(userId)}`);
    const row = page.locator(`#devices tr[data-device="${app.identity.deviceId}"]`);
    assert.match(await row.textContent() ?? '', /Pixel of Pushy\s*none\s*active/);
    assert.doesNotMatch(await row.locator('td:nth-child(5)').textContent() ?? '', /—/, 'its last use is shown');
    await row.locator('form button[type=submit]').click();
    assert.match(await page.textContent('.notice') ?? '', /authenticator app is revoked/);
    assert.match(await page.textContent('#devices') ?? '', /No authenticator app/);
    await assert.rejects(app.pending(), /not for an activated account/);
    await context.close();
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium', 'authenticator'] }, 'the users page’s method filter lists exactly the users who have that method, or with none those who must register first; its next pages keep the filter', async () => {
    const tenantM = uniqueTenant('console-methods');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: tenantM, settings: {} })).error, undefined);
    // 64 users, ordered by id, methods interleaved: a phone (SMS and voice) for most, more than a
    // page of 50; an activated code app; an authenticator app; a phone and a code app; no method.
    type Kind = 'phone' | 'totp' | 'push' | 'phone-totp' | 'none';
    const kindOf = (n: number): Kind => (n % 11 === 3 ? 'none' : n % 11 === 7 ? 'totp' : n === 20 ? 'push' : n === 9 ? 'phone-totp' : 'phone');
    const methodsOf: Record<Kind, string[]> = { phone: ['sms', 'voice'], totp: ['totp'], push: ['push'], 'phone-totp': ['sms', 'voice', 'totp'], none: [] };
    const users = Array.from({ length: 64 }, (_, n) => ({ userId: `u${String(n).padStart(2, '0')}-${kindOf(n)}@methods.example`, kind: kindOf(n) }));
    for (const [n, { userId, kind }] of users.entries()) {
      const phone = kind === 'phone' || kind === 'phone-totp' ? { phoneNumber: `+1415556${String(3000 + n)}` } : {};
      assert.equal((await ask(Subjects.usersRegister, { tenantId: tenantM, userId, ...phone })).error, undefined, userId);
      if (kind === 'totp' || kind === 'phone-totp') {
        const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenantM, userId });
        assert.equal((await ask(Subjects.totpActivate, { tenantId: tenantM, userId, tokenId: enrolled.tokenId, code: totp(base32Decode(String(enrolled.secret)), Date.now()) })).active, true, userId);
      }
      if (kind === 'push') {
        const enrolled = await ask(Subjects.usersPushEnroll, { tenantId: tenantM, userId });
        await DeviceClient.activate(String(enrolled.activationUrl), { name: 'Pixel', algorithm: 'Ed25519' });
      }
    }
    const expected = (method: string) => users.filter((u) => (method === '' ? true : method === 'none' ? methodsOf[u.kind].length === 0 : methodsOf[u.kind].includes(method))).map((u) => u.userId);
    // The directory has every user with their methods (the authenticator app's once activated).
    await eventually(async () => {
      const listed = (await ask(Subjects.usersList, { tenantId: tenantM, limit: 500 })).items as Array<{ userId: string; methods: string[] }>;
      return JSON.stringify(listed.map((u) => [u.userId, u.methods.toSorted()])) === JSON.stringify(users.map((u) => [u.userId, methodsOf[u.kind].toSorted()])) ? true : undefined;
    }, 20_000, 'every user in the directory with their methods');

    const { context, page } = await signIn('ops');
    /** What the page lists for a search: the rows of every page, following its Next page links; how many pages it took. */
    const search = async (method: string, q = '') => {
      await tenantPage(page, tenantM, 'users');
      await page.fill('#user-search input[name=q]', q);
      await page.selectOption('#method-filter', method);
      await Promise.all([page.waitForEvent('load'), page.click('#user-search button[type=submit]')]);
      const rows: Array<[string, string]> = [];
      for (let pages = 1; ; pages++) {
        assert.equal(await page.inputValue('#method-filter'), method, `page ${pages} shows the filter`);
        assert.equal(await page.inputValue('#user-search input[name=q]'), q, `page ${pages} shows the search`);
        rows.push(...((await page.locator('#users-found tbody tr:has(a)').evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].slice(0, 3).map((td) => (td.textContent ?? '').trim())))) as string[][]).map(([id, , methods]) => [id!, methods!] as [string, string]));
        const next = page.locator('#users-found + p a.button');
        if ((await next.count()) === 0) return { rows, pages };
        const href = new URL((await next.getAttribute('href'))!, page.url());
        assert.deepEqual([href.searchParams.get('method'), href.searchParams.get('q')], [method || null, q || null], `the next page link of page ${pages} keeps the filter`);
        await Promise.all([page.waitForEvent('load'), next.click()]);
      }
    };
    for (const method of ['sms', 'voice', 'totp', 'push', 'none']) {
      const { rows, pages } = await search(method);
      assert.deepEqual(rows.map(([id]) => id), expected(method), `method ${method}`);
      assert.ok(rows.every(([, methods]) => (method === 'none' ? methods === 'none' : methods.split(', ').includes(method))), `the methods shown for ${method}: ${rows.join(' | ')}`);
      if (method === 'sms' || method === 'voice') assert.ok(pages >= 2, `${expected(method).length} users with ${method} take more than one page of 50`);
    }
    assert.deepEqual(expected('none').length, 6);
    // Any method: every user; the filter with a search: both apply.
    assert.deepEqual((await search('')).rows.map(([id]) => id), expected(''));
    assert.deepEqual((await search('none', 'U1')).rows.map(([id]) => id), ['u14-none@methods.example']);
    assert.deepEqual((await search('totp', 'u0')).rows.map(([id]) => id), ['u07-totp@methods.example', 'u09-phone-totp@methods.example']);
    await context.close();
  }, { timeout: 180_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'a tenant created on the page, a user registered there, the profile changed, then erased only once the user id is typed again', async () => {
    const { context, page } = await signIn('ops');
    const tenantC = uniqueTenant('paged');
    await page.goto(`${consoleUrl}/tenants`);
    await page.fill('#create-tenant input[name=tenantId]', tenantC);
    await page.click('#create-tenant button[type=submit]');
    assert.match(await page.textContent('h1') ?? '', /Tenant settings/);
    assert.equal(await page.inputValue('input[name=codeLifetimeSeconds]'), '180');
    assert.equal(((await ask(Subjects.tenantsGet, { tenantId: tenantC })).settings as { maxAttempts: number }).maxAttempts, 5);
    // Created once: the same id again changes nothing and says so.
    await page.goto(`${consoleUrl}/tenants`);
    await page.fill('#create-tenant input[name=tenantId]', tenantC);
    await page.click('#create-tenant button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /exists already/);
    const userId = uniqueUser('paged');
    const get = () => ask(Subjects.usersGet, { tenantId: tenantC, userId });
    await tenantPage(page, tenantC, 'users');
    await page.click('#register-user summary');
    await page.fill('#register-user input[name=userId]', userId);
    await page.fill('#register-user input[name=displayName]', 'Greta Sida');
    await page.fill('#register-user input[name=phoneNumber]', '+46701740606');
    await page.click('#register-user button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /user is saved/);
    let user = await get();
    assert.deepEqual([user.displayName, user.phoneNumber, user.email, user.methods], ['Greta Sida', '+46701740606', null, ['sms', 'voice']]);
    // The new-user form changes no user who exists (the phone is a factor): the profile form does.
    await tenantPage(page, tenantC, 'users');
    await page.click('#register-user summary');
    await page.fill('#register-user input[name=userId]', userId);
    await page.fill('#register-user input[name=phoneNumber]', '+46701740699');
    await page.click('#register-user button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /registered already/);
    assert.equal((await get()).phoneNumber, '+46701740606');
    // The profile on the user's page: what is changed changes, the rest stays.
    assert.equal(await page.inputValue('#edit-profile input[name=phoneNumber]'), '+46701740606');
    await page.fill('#edit-profile input[name=email]', 'greta.sida@contoso.com');
    await page.fill('#edit-profile input[name=displayName]', 'Greta Sidan');
    await page.click('#edit-profile button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /user is saved/);
    user = await get();
    assert.deepEqual([user.displayName, user.email, user.phoneNumber], ['Greta Sidan', 'greta.sida@contoso.com', '+46701740606']);
    // A profile the contract refuses says why and changes nothing.
    await page.fill('#edit-profile input[name=email]', 'greta@');
    await page.$eval('#edit-profile', (form) => (form as unknown as { noValidate: boolean }).noValidate = true);
    await page.click('#edit-profile button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /invalid_request.*email/);
    assert.equal((await get()).email, 'greta.sida@contoso.com');
    // A code app added on the page: the key shown once, a wrong code leaves it pending, the right one activates it.
    await tenantPage(page, tenantC, `users?userId=${encodeURIComponent(userId)}`);
    await page.fill('#totp-enroll input[name=label]', 'Greta phone');
    await page.click('#totp-enroll button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /code app is ready/);
    const width = await page.$eval('#totp-enrolment img', (img) => (img as unknown as { naturalWidth: number }).naturalWidth);
    assert.ok(width > 100, `the QR code is drawn (${width} px)`);
    const secret = base32Decode((await page.textContent('#totp-secret')) ?? '');
    const now = Date.now();
    const wrong = String((Number(totp(secret, now)) + 500_000) % 1_000_000).padStart(6, '0');
    await page.fill('#totp-activate input[name=code]', wrong);
    await page.click('#totp-activate button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /stays pending/);
    assert.deepEqual(((await get()).tokens as Array<{ state: string }>).map((t) => t.state), ['pending']);
    // The pending token's row takes the code too.
    await page.fill('form.activate-token input[name=code]', totp(secret, Date.now()));
    await page.click('form.activate-token button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /token is active/);
    assert.deepEqual(((await get()).tokens as Array<{ state: string; label: string }>).map((t) => [t.state, t.label]), [['active', 'Greta phone']]);
    // An app password: refused while the tenant does not allow them, shown once when it does.
    await page.click('#create-app-password button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /forbidden.*app passwords/);
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: tenantC, settings: { appPasswords: { allowed: true } } })).error, undefined);
    await tenantPage(page, tenantC, `users?userId=${encodeURIComponent(userId)}`);
    await page.fill('#create-app-password input[name=name]', 'Outlook 2010');
    await page.click('#create-app-password button[type=submit]');
    const password = ((await page.textContent('#app-password code')) ?? '').trim();
    assert.match(password, /^[a-z2-7]{24}$/);
    assert.deepEqual(await ask(Subjects.appPasswordsVerify, { tenantId: tenantC, userId, password }), { valid: true });
    // Erasure: a confirmation that is not the user id erases nothing.
    await tenantPage(page, tenantC, `users?userId=${encodeURIComponent(userId)}`);
    await page.fill('#erase-user input[name=confirm]', userId.toUpperCase());
    await page.click('#erase-user button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /type the user id/);
    assert.equal((await get()).displayName, 'Greta Sidan');
    await tenantPage(page, tenantC, `users?userId=${encodeURIComponent(userId)}`);
    await page.fill('#erase-user input[name=confirm]', userId);
    await page.click('#erase-user button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /is erased/);
    assert.equal(((await get()).error as { code: string } | undefined)?.code, 'not_found');
    await context.close();
  });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'a platform operator deletes a tenant on its settings page once its id is typed again: its pages answer not found, its key is refused, Check the state shows it deleted with what was erased, the id may be created again; a tenant admin gets no such form', async () => {
    const tenantE = uniqueTenant('offboard');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: tenantE, settings: {} })).error, undefined);
    const userId = uniqueUser('leaver');
    assert.equal((await ask(Subjects.usersRegister, { tenantId: tenantE, userId, displayName: 'Lea Leaver', phoneNumber: '+14155550131' })).error, undefined);
    const client = await ask(Subjects.clientsCreate, { tenantId: tenantE, name: 'idp', scopes: ['users'] });
    const asTenant = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${String(client.apiKey)}` } });
    assert.equal((await asTenant(Subjects.usersGet, { tenantId: tenantE, userId })).displayName, 'Lea Leaver');

    // A tenant admin: the settings to change, no deletion; posting one anyway is refused.
    const admin = await signIn('admin-a');
    await tenantPage(admin.page, tenantA, 'settings');
    assert.equal(await admin.page.locator('form.settings button[type=submit]').count(), 1, 'the admin saves settings');
    assert.equal(await admin.page.locator('#offboard-tenant, #delete-tenant').count(), 0, 'no deletion form');
    const csrf = await admin.page.inputValue('form[action="/auth/logout"] input[name=_csrf]');
    const forced = await admin.page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/delete`, { form: { _csrf: csrf, confirm: tenantA }, maxRedirects: 0 });
    assert.equal(forced.status(), 403);
    assert.equal((await ask(Subjects.tenantsGet, { tenantId: tenantA })).error, undefined);
    await admin.context.close();

    const { context, page } = await signIn('ops');
    await tenantPage(page, tenantE, 'settings');
    assert.match(await page.textContent('#offboard-tenant') ?? '', /cannot be undone/);
    await page.screenshot({ path: join(SHOTS, 'tenant-delete.png'), fullPage: true });
    // A confirmation that is not the tenant id deletes nothing.
    await page.fill('#delete-tenant input[name=confirm]', tenantE.toUpperCase());
    await page.click('#delete-tenant button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /not deleted: type the tenant id exactly/);
    assert.equal((await ask(Subjects.tenantsGet, { tenantId: tenantE })).error, undefined);
    await page.fill('#delete-tenant input[name=confirm]', tenantE);
    await page.click('#delete-tenant button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', new RegExp(`${tenantE} is (being )?deleted`));
    assert.match(await page.textContent('h1') ?? '', /Tenants/);
    // Unknown from the first answer on: its pages, and its key.
    for (const path of ['settings', 'users', `users?userId=${encodeURIComponent(userId)}`, 'oath', 'clients']) {
      assert.equal((await tenantPage(page, tenantE, path))?.status(), 404, path);
      assert.match(await page.textContent('h1') ?? '', /Not found/, path);
    }
    assert.equal((await asTenant(Subjects.usersGet, { tenantId: tenantE, userId })).error?.code, 'forbidden');
    // Where it stands, each time the operator asks: deleted, with what was erased.
    await page.goto(`${consoleUrl}/tenants`);
    const check = async () => {
      await Promise.all([page.waitForEvent('load'), page.click('#deletion-state button[type=submit]')]);
      return page.getAttribute('#tenant-deletion', 'data-state');
    };
    await page.fill('#deletion-state input[name=tenantId]', tenantE);
    await eventually(async () => ((await check()) === 'deleted' ? true : undefined), 60_000, 'the tenant deleted');
    const erased = Object.fromEntries(
      await Promise.all(['users', 'hardware-tokens', 'recordings', 'clients'].map(async (what) => [what, (await page.textContent(`#tenant-deletion dd.erased-${what}`))?.trim()])),
    );
    assert.deepEqual(erased, { users: '1', 'hardware-tokens': '0', recordings: '0', clients: '1' });
    assert.match(await page.textContent('.notice') ?? '', /is deleted: its users are erased/);
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantE, userId })).error?.code, 'not_found');
    // Once deleted, the id may be created again: a new tenant, without the old one's user.
    await page.goto(`${consoleUrl}/tenants`);
    await page.fill('#create-tenant input[name=tenantId]', tenantE);
    await page.click('#create-tenant button[type=submit]');
    assert.match(await page.textContent('h1') ?? '', /Tenant settings/);
    assert.equal((await tenantPage(page, tenantE, `users?userId=${encodeURIComponent(userId)}`))?.status(), 404);
    // Check the state never deletes a tenant in use.
    await page.goto(`${consoleUrl}/tenants`);
    await page.fill('#deletion-state input[name=tenantId]', tenantE);
    await page.click('#deletion-state button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /in use, not one being deleted: nothing was changed/);
    assert.equal((await ask(Subjects.tenantsGet, { tenantId: tenantE })).error, undefined);
    await context.close();
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, "a user's remembered browsers forgotten all at once; the audit log filtered by operator; the audit, fraud and blocked reports downloaded as CSV with the page's filters", async () => {
    const tenantD = uniqueTenant('console-audit');
    const user = uniqueUser('laptop');
    const victim = uniqueUser('fraud');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: tenantD, settings: { rememberMfa: { enabled: true, days: 30 } } })).error, undefined);
    await ask(Subjects.usersRegister, { tenantId: tenantD, userId: user, phoneNumber: '+14155550131' });
    await ask(Subjects.usersRegister, { tenantId: tenantD, userId: victim, phoneNumber: '+14155550132' });
    // Another operator's change, as the console sends one: the platform key naming the operator.
    const ivan = await requestJson<Reply>(nc, Subjects.usersBlock, { tenantId: tenantD, userId: victim, reason: 'by ivan' }, {
      timeoutMs: 10_000,
      headers: { Authorization: `Bearer ${platformKey}`, [Headers.operator]: JSON.stringify({ sub: 'ivan', name: 'Ivan Operator' }) },
    });
    assert.equal(ivan.error, undefined);
    // Two remembered browsers of the user: each approval spends a TOTP step of its own, within the window (t-1, t, t+1).
    const enrolled = await ask(Subjects.totpEnroll, { tenantId: tenantD, userId: user });
    const secret = base32Decode(String(enrolled.secret));
    let lastStep = -1;
    const freshCode = async () => {
      for (;;) {
        const now = Date.now();
        const current = Math.floor(now / 30_000);
        // Not the previous step in the last seconds of this one: the service may read the clock in the next.
        const step = Math.max(lastStep + 1, now % 30_000 < 25_000 ? current - 1 : current);
        if (step <= current + 1) return totp(secret, (lastStep = step) * 30_000);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    };
    assert.equal((await ask(Subjects.totpActivate, { tenantId: tenantD, userId: user, tokenId: enrolled.tokenId, code: await freshCode() })).active, true);
    const rememberTokens: string[] = [];
    for (let n = 0; n < 2; n++) {
      const start = await eventually(async () => {
        const started = await ask(Subjects.challengeStart, { tenantId: tenantD, userId: user, method: 'totp', context: { rememberDevice: true } });
        return started.status === 'pending' ? started : undefined;
      }, 10_000, 'a pending start');
      const approved = await ask(Subjects.challengeVerify, { tenantId: tenantD, challengeId: start.challengeId, code: await freshCode() });
      assert.equal(approved.status, 'approved', JSON.stringify(approved));
      rememberTokens.push(String(approved.rememberToken));
    }
    for (const rememberToken of rememberTokens) {
      await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId: tenantD, userId: user, context: { rememberToken } })).reason === 'remembered_device' ? true : undefined), 10_000, 'the browser remembered');
    }

    const { context, page } = await signIn('ops');
    // Forget every browser of the user at once.
    await tenantPage(page, tenantD, `users?userId=${encodeURIComponent(user)}`);
    assert.equal(await page.locator('#remembered tbody tr form').count(), 2);
    await page.click('#forget-browsers button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /Every remembered browser of the user is forgotten/);
    assert.equal(await page.locator('#remembered tbody tr form').count(), 0);
    assert.equal(await page.locator('#forget-browsers').count(), 0, 'nothing left to forget');
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId: tenantD, userId: user })).rememberedBrowsers, []);
    for (const rememberToken of rememberTokens) {
      assert.equal((await ask(Subjects.challengeStart, { tenantId: tenantD, userId: user, context: { rememberToken } })).status, 'pending', 'a forgotten browser asks for MFA again');
    }
    // A block on the page (the history), and a fraud alert whose comment a spreadsheet would run.
    await page.fill('input[name=reason]', 'laptop lost');
    await page.click('form[action$="/users/block"] button[type=submit]');
    assert.match(await page.textContent('#block-status') ?? '', /Blocked/);
    await ask(Subjects.fraudReport, { tenantId: tenantD, userId: victim, source: 'idp', comment: '=HYPERLINK("http://evil.example","not me")' });

    /** The file a click on the page's CSV link downloads, as lines. */
    const download = async () => {
      const [file] = await Promise.all([page.waitForEvent('download'), page.click('a[download]')]);
      assert.match(file.suggestedFilename(), new RegExp(`-${tenantD}\\.csv$`));
      return readFileSync((await file.path())!, 'utf8').trim().split(/\r?\n/);
    };

    // The audit log by operator: Olga's sub (as the identity provider names her) finds only her actions.
    await tenantPage(page, tenantD, 'audit');
    await eventually(async () => {
      await page.reload();
      const text = (await page.textContent('main')) ?? '';
      return text.includes('Ivan Operator') && text.includes('users.remembered.revoke') && text.includes('users.block') ? true : undefined;
    }, 20_000, 'both operators in the audit log');
    await page.fill('form.filters input[name=operator]', 'ops');
    await page.click('form.filters button[type=submit]');
    await page.waitForURL(/[?&]operator=ops/);
    const operators = (await page.locator('table.report tbody tr td:nth-child(2)').allTextContents()).map((t) => t.trim());
    assert.ok(operators.length >= 2 && operators.every((o) => o === 'Olga Operator <olga@ops.example>'), operators.join(' | '));
    const actions = (await page.locator('table.report tbody tr td:nth-child(4)').allTextContents()).map((t) => t.trim());
    assert.ok(actions.includes('users.remembered.revoke') && actions.includes('users.block'), actions.join(' | '));
    assert.equal(await page.inputValue('form.filters input[name=operator]'), 'ops');
    const audit = await download();
    assert.equal(audit[0], 'occurredAt,clientId,operator,operatorName,operatorEmail,subject,userId,outcome');
    assert.equal(audit.length - 1, operators.length, 'the file holds the rows the filter selects');
    assert.ok(audit.slice(1).every((row) => row.includes(',platform,ops,Olga Operator,olga@ops.example,mfa.v1.')), audit.join('\n'));
    assert.ok(audit.some((row) => row.includes(`,mfa.v1.users.remembered.revoke,${user},ok`)));

    // Fraud alerts: the comment is text in the file, never a formula.
    await tenantPage(page, tenantD, `fraud?userId=${encodeURIComponent(victim)}`);
    await eventually(async () => ((await page.reload(), await page.locator('table.report tbody tr td a').count()) === 1 ? true : undefined), 20_000, 'the fraud alert');
    const fraud = await download();
    assert.equal(fraud[0], 'occurredAt,userId,displayName,email,phoneNumber,source,clientIp,application,challengeId,deviceId,comment,challengeDenied,blocked,blockedUntil,reportedBy,notificationsSent,notificationsFailed,alertId');
    assert.equal(fraud.length, 2);
    assert.ok(fraud[1]!.includes(`,${victim},`) && fraud[1]!.includes(`,idp,`), fraud[1]);
    assert.ok(fraud[1]!.includes(`"'=HYPERLINK(""http://evil.example"",""not me"")"`), fraud[1]);

    // The blocked history, filtered to blocks: the page's block with the operator, the file the same rows.
    await tenantPage(page, tenantD, `blocked?action=block&userId=${encodeURIComponent(user)}`);
    await eventually(async () => ((await page.reload(), (await page.textContent('main')) ?? '').includes('laptop lost') ? true : undefined), 20_000, 'the block in the history');
    const blocked = await download();
    assert.equal(blocked[0], 'occurredAt,action,userId,ip,reason,source,actorClientId,actorOperator,until,dryRun');
    assert.equal(blocked.length, 2, blocked.join('\n'));
    assert.ok(blocked[1]!.includes(`,block,${user},,laptop lost,admin,platform,`) && blocked[1]!.endsWith(',false'), blocked[1]);
    await context.close();
  }, { timeout: 180_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'a CSV export the browser cancels stops: no more pages are read from the reports', async () => {
    // A tenant with 30,000 sign-ins in the report (60 pages of 500), written straight into reporting's tables.
    const tenantC = uniqueTenant('console-csv');
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: tenantC, settings: {} })).error, undefined);
    const db = new pg.Client({ connectionString: testDatabaseUrl('mfa_e2e') });
    await db.connect();
    try {
      await eventually(async () => ((await db.query('SELECT 1 FROM tenants WHERE tenant_id = $1', [tenantC])).rowCount === 1 ? true : undefined), 30_000, 'the tenant in the report');
      await db.query(
        `INSERT INTO signins (tenant_id, challenge_id, occurred_at, user_id, auth_method, result, result_detail, server_name, server_ip,
                              client_ip, application, expires_at, completed_at, context_seq, result_seq, failed_attempts, last_event_seq)
         SELECT $1, 'csv-' || n, now() - n * interval '1 second', 'user-' || (n % 100) || '@csv.example', 'totp', 'success',
                'MFA successfully completed', 'mfa-1', '10.0.0.5', '198.51.100.' || (n % 250), 'VPN', now(), now(), n, n, 0, n
           FROM generate_series(1, 30000) AS n`,
        [tenantC],
      );
    } finally {
      await db.end();
    }
    let queries = 0;
    const watch = nc.subscribe(Subjects.reportsSigninsQuery, {
      callback: (_error, msg) => {
        if ((msg.json() as { tenantId?: string }).tenantId === tenantC) queries++;
      },
    });
    const { context } = await signIn('ops');
    const session = (await context.cookies()).find((c) => c.name === 'mfa-console')!.value;
    await context.close();
    const aborted = new AbortController();
    const download = await fetch(`${consoleUrl}/t/${encodeURIComponent(tenantC)}/signins?format=csv`, { headers: { cookie: `mfa-console=${session}` }, signal: aborted.signal });
    assert.equal(download.status, 200);
    const first = await download.body!.getReader().read();
    assert.ok(first.value && Buffer.from(first.value).toString().startsWith('occurredAt,userId,'));
    aborted.abort();
    // Settled: no query for two seconds.
    let seen = -1;
    while (seen !== queries) {
      seen = queries;
      await new Promise((resolve) => setTimeout(resolve, 2_000));
    }
    watch.unsubscribe();
    assert.ok(queries < 10, `${queries} pages of 60 were read for a download cancelled after its first bytes`);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'bodies the parsers refuse (a charset, an encoding, a recording over 1 MB) are answered 4xx and not logged as errors of the console', async () => {
    const before = consoleErrors.length;
    const post = (path: string, headers: Record<string, string>, body: string | Uint8Array) => fetch(`${consoleUrl}${path}`, { method: 'POST', headers, body, redirect: 'manual' });
    const statuses = [
      (await post(`/t/${tenantA}/settings`, { 'content-type': 'application/x-www-form-urlencoded; charset=foo' }, 'a=1')).status,
      (await post(`/t/${tenantA}/settings`, { 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'bogus' }, 'a=1')).status,
      // A recording is read only with a session and its CSRF token: without, refused before its body.
      (await post(`/t/${tenantA}/voice`, { 'content-type': 'application/octet-stream' }, new Uint8Array(1_100_000))).status,
    ];
    assert.deepEqual(statuses, [415, 415, 403]);
    // Answered at once, before the megabyte the request announces has come: nothing is held for it.
    const early = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer before the body was sent: the console waits for it')), 5_000);
      const req = httpRequest(`${consoleUrl}/t/${tenantA}/voice`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': '1000000' } }, (res) => {
        clearTimeout(timer);
        res.resume();
        req.destroy();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => undefined);
      req.write(Buffer.alloc(1_000));
    });
    assert.equal(early, 403);
    // Answered before any route: the security headers are there all the same.
    const refused = await post(`/t/${tenantA}/settings`, { 'content-type': 'application/x-www-form-urlencoded' }, 'a='.repeat(40_000));
    assert.equal(refused.status, 413);
    assert.match(refused.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(refused.headers.get('x-frame-options'), 'DENY');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(consoleErrors.slice(before), [], 'an error line for a client error');
  });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'a sign-in begun stores nothing on the server and a forged one is refused; a form without a body is refused 4xx; a signed-in browser begins no sign-in; completing one ends the previous session', async () => {
    const redis = new Redis(testEnv.redisUrl);
    try {
      const pendingKeys = async () => (await redis.keys('mfa:console:login:*')).length;
      const keysBefore = await pendingKeys();
      const cookies: string[] = [];
      for (let n = 0; n < 20; n++) {
        const begun = await fetch(`${consoleUrl}/auth/login`, { redirect: 'manual' });
        assert.equal(begun.status, 303);
        cookies.push(begun.headers.getSetCookie().find((c) => c.startsWith('mfa-console-login='))!.split(';')[0]!);
      }
      assert.equal(await pendingKeys(), keysBefore, 'anyone may begin a sign-in: it must cost the server nothing');
      // A callback with a forged or altered pending sign-in is refused before the identity provider is asked.
      const value = cookies[0]!.split('=')[1]!;
      for (const forged of ['mfa-console-login=forged', `mfa-console-login=${value.slice(0, -3)}AAA`, 'mfa-console-login=']) {
        const callback = await fetch(`${consoleUrl}/auth/callback?code=x&state=y`, { headers: { cookie: forged }, redirect: 'manual' });
        assert.equal(callback.status, 403, forged);
      }

      const { context, page } = await signIn('ops');
      await tenantPage(page, tenantA, 'overview');
      const csrf = await page.inputValue('form[action="/auth/logout"] input[name=_csrf]');
      const before = consoleErrors.length;
      for (const headers of [{ 'x-csrf-token': csrf, 'content-type': 'text/plain' }, { 'x-csrf-token': csrf }] as Record<string, string>[]) {
        for (const path of ['users/block', 'ips/unlock', 'settings']) {
          const posted = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/${path}`, { headers, maxRedirects: 0 });
          assert.ok(posted.status() >= 400 && posted.status() < 500, `${path}: ${posted.status()}`);
        }
      }
      // With the session and its token, a recording over 1 MB is read, and refused 413.
      const large = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/voice`, {
        headers: { 'x-csrf-token': csrf, 'content-type': 'application/octet-stream' },
        data: Buffer.alloc(1_100_000),
        maxRedirects: 0,
      });
      assert.equal(large.status(), 413);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.deepEqual(consoleErrors.slice(before), [], "a form without a body, or a recording too large, is the client's error");

      const sessionOf = async () => (await context.cookies()).find((c) => c.name === 'mfa-console')?.value;
      const first = (await sessionOf())!;
      // Signed in, a link to the sign-in (from any site) begins nothing: the browser goes where it
      // was to return to, with the same session, though the identity provider would sign it in silently.
      const overview = `/t/${encodeURIComponent(tenantA)}/overview`;
      const linked = await page.request.get(`${consoleUrl}/auth/login?returnTo=${encodeURIComponent(overview)}`, { maxRedirects: 0 });
      assert.equal(linked.status(), 303);
      assert.equal(linked.headers().location, overview);
      assert.ok(!linked.headersArray().some((h) => h.name.toLowerCase() === 'set-cookie' && h.value.startsWith('mfa-console-login=')), 'no sign-in begun');
      for (const elsewhere of ['//evil.example/x', 'https://evil.example/', '/\\evil.example']) {
        const refused = await page.request.get(`${consoleUrl}/auth/login?returnTo=${encodeURIComponent(elsewhere)}`, { maxRedirects: 0 });
        assert.equal(refused.headers().location, '/', elsewhere);
      }
      await page.goto(`${consoleUrl}/auth/login`);
      await page.waitForURL((url) => url.origin === consoleUrl, { waitUntil: 'load' });
      assert.equal(await sessionOf(), first, 'the session is the same');
      // A sign-in begun without the session (another tab, before it) and completed with it ends it.
      await context.clearCookies({ name: 'mfa-console' });
      const begun = await page.request.get(`${consoleUrl}/auth/login`, { maxRedirects: 0 });
      assert.equal(begun.status(), 303);
      await context.addCookies([{ name: 'mfa-console', value: first, url: consoleUrl }]);
      await page.goto(begun.headers().location!);
      await page.waitForURL((url) => url.origin === consoleUrl, { waitUntil: 'load' });
      const second = await sessionOf();
      assert.ok(second !== undefined && second !== first, 'a new session');
      const withFirst = await fetch(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/overview`, { headers: { cookie: `mfa-console=${first}` }, redirect: 'manual' });
      assert.notEqual(withFirst.status, 200, 'the session before the new sign-in has ended');
      const withSecond = await fetch(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/overview`, { headers: { cookie: `mfa-console=${second}` }, redirect: 'manual' });
      assert.equal(withSecond.status, 200);
      await context.close();
    } finally {
      redis.disconnect();
    }
  });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, "signing out ends the console's session and the identity provider's, also once the console's had ended: the next visit asks who you are", async () => {
    const idp = new URL(oidc.issuer).origin;
    const signOut = async (page: Page) => {
      // Where the console's answer sends the browser: the provider's end_session_endpoint.
      const sent = page.waitForRequest((r) => r.url().startsWith(`${idp}/`) && r.isNavigationRequest());
      await page.click('form[action="/auth/logout"] button[type=submit]');
      const location = new URL((await sent).url());
      // The identity provider asks whether to end its own session too (RP-initiated logout).
      await page.waitForURL((url) => url.origin === idp);
      await page.click('button[name=logout][value=yes]');
      await page.waitForURL(`${consoleUrl}/auth/signed-out`);
      assert.match((await page.textContent('h1')) ?? '', /Signed out/);
      return location;
    };
    const redis = new Redis(testEnv.redisUrl);
    try {
      const { context, page } = await signIn('ops');
      const session = (await context.cookies()).find((c) => c.name === 'mfa-console')!.value;
      const location = await signOut(page);
      assert.equal(location.origin, idp);
      assert.equal(location.searchParams.get('post_logout_redirect_uri'), `${consoleUrl}/auth/signed-out`);
      assert.ok(location.searchParams.get('id_token_hint'), 'the ID token as hint');
      assert.equal((await context.cookies()).find((c) => c.name === 'mfa-console'), undefined, 'the cookie is gone');
      const withOld = await fetch(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/overview`, { headers: { cookie: `mfa-console=${session}` }, redirect: 'manual' });
      assert.equal(withOld.status, 303, "the console's session has ended");
      // Not signed in again silently: the provider's own sign-in form.
      await page.click('a[href="/auth/login"]');
      await page.waitForURL((url) => url.origin === idp);
      await page.waitForSelector('input[name=login]');
      await context.close();

      // The console's session ended (idle) while its page was open: Sign out still ends the provider's.
      const idle = await signIn('ops');
      await tenantPage(idle.page, tenantA, 'overview');
      const id = (await idle.context.cookies()).find((c) => c.name === 'mfa-console')!.value;
      assert.equal(await redis.del(`mfa:console:session:${createHash('sha256').update(id).digest('base64url')}`), 1);
      const bare = await signOut(idle.page);
      assert.equal(bare.searchParams.get('id_token_hint'), null, 'no session, no hint');
      assert.equal(bare.searchParams.get('client_id'), oidc.clientId);
      await idle.page.goto(`${consoleUrl}/`);
      await idle.page.waitForURL((url) => url.origin === idp);
      await idle.page.waitForSelector('input[name=login]');
      await idle.context.close();
    } finally {
      redis.disconnect();
    }
  });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'an incident: an address locked by the per-IP lockout is listed on the blocked page, unlocked there with a reason, and lets sign-ins in again; the history names the operator', async () => {
    const tenantId = uniqueTenant('console-ip');
    const attacker = '203.0.113.91';
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { ipLockout: { threshold: 5, windowMinutes: 10, durationMinutes: 30 } } })).error, undefined);
    // Password spraying: one wrong code each for five users from one address.
    const users = Array.from({ length: 6 }, (_, n) => uniqueUser(`sprayed-${n}`));
    for (const [n, userId] of users.entries()) assert.equal((await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: `+1415557${String(2000 + n)}` })).error, undefined);
    for (const userId of users.slice(0, 5)) {
      const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: attacker });
      assert.equal(start.status, 'pending', JSON.stringify(start));
      await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: '000000' });
    }
    const last = users[5]!;
    // Probed with a user who has no method: until the lock applies each probe answers
    // registration_required and sends nothing, so `last` keeps every SMS its limit allows for the end.
    const probe = uniqueUser('probe');
    assert.equal((await ask(Subjects.usersRegister, { tenantId, userId: probe })).error, undefined);
    await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId, userId: probe, clientIp: attacker })).reason === 'ip_locked' ? true : undefined), 20_000, 'the address locked');
    assert.equal((await ask(Subjects.challengeStart, { tenantId, userId: last, method: 'sms', clientIp: attacker })).reason, 'ip_locked', 'for every user');

    const { context, page } = await signIn('ops');
    await tenantPage(page, tenantId, 'blocked');
    const row = page.locator('tr', { has: page.locator(`code:text-is("${attacker}")`) }).first();
    assert.deepEqual((await row.locator('td').allTextContents()).slice(3, 5).map((t) => t.trim()), ['5', '5'], 'its denials and users');
    await row.locator('input[name=reason]').fill('spray from a pen test <b>');
    await row.locator('button[type=submit]').click();
    assert.match((await page.textContent('.notice')) ?? '', /address is unlocked/);
    assert.match((await page.textContent('main')) ?? '', /No address is locked/);
    assert.deepEqual((await ask(Subjects.fraudIpsList, { tenantId })).items, []);
    await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId, userId: last, method: 'sms', clientIp: attacker })).status === 'pending' ? true : undefined), 20_000, 'the address let in again');
    // The history: the lock and the unlock, with the reason as text and who unlocked it.
    const unlock = await eventually(async () => {
      // Opened again, not reloaded: a reload would post the unlock once more.
      await tenantPage(page, tenantId, 'blocked');
      const unlock = page.locator('table.report tbody tr', { hasText: 'spray from a pen test <b>' });
      return (await unlock.count()) === 1 ? unlock : undefined;
    }, 20_000, 'the unlock in the history');
    const by = (await unlock.locator('td').allTextContents()).map((t) => t.trim());
    assert.equal(by[1], 'ip_unlock');
    assert.match(by[5] ?? '', /Olga Operator|olga@ops\.example|^ops$/, `the operator who unlocked it: ${by.join(' | ')}`);
    // Unlocking an address that is not locked says so on the page.
    const csrf = await page.inputValue('form[action="/auth/logout"] input[name=_csrf]');
    const again = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantId)}/ips/unlock`, { form: { _csrf: csrf, ip: attacker, reason: 'twice' } });
    assert.equal(again.status(), 409);
    await context.close();
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'a tenant reader cannot change anything, a tenant admin sees only their tenant, an account without a role is refused', async () => {
    const reader = await signIn('reader-a');
    await tenantPage(reader.page, tenantA, 'settings');
    assert.equal(await reader.page.locator('form.settings button[type=submit]').count(), 0, 'no save button');
    assert.match(await reader.page.textContent('header') ?? '', /read only/);
    await tenantPage(reader.page, tenantA, `users?userId=${encodeURIComponent(userA)}`);
    assert.equal(await reader.page.locator('form[action*="/users/"]').count(), 0, 'no block form');
    // Posting anyway (with the session's CSRF token) is refused, and nothing changes.
    const csrf = await reader.page.inputValue('form[action="/auth/logout"] input[name=_csrf]');
    const posted = await reader.page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/users/block`, { form: { _csrf: csrf, userId: userA, reason: 'x' }, maxRedirects: 0 });
    assert.equal(posted.status(), 403);
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).blocked, null);
    assert.equal((await tenantPage(reader.page, tenantA, 'clients'))?.status(), 403);
    await reader.context.close();

    const admin = await signIn('admin-a');
    assert.match(new URL(admin.page.url()).pathname, new RegExp(`/t/${tenantA}/overview`));
    assert.equal((await tenantPage(admin.page, tenantB, 'signins'))?.status(), 403);
    assert.equal((await tenantPage(admin.page, tenantB, 'settings'))?.status(), 403);
    // No CSRF token: refused. A cross-origin form: refused.
    const noToken = await admin.page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/users/block`, { form: { userId: userA, reason: 'x' }, maxRedirects: 0 });
    assert.equal(noToken.status(), 403);
    const crossOrigin = await admin.page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/users/block`, { form: { userId: userA, reason: 'x' }, headers: { Origin: 'http://evil.example' }, maxRedirects: 0 });
    assert.equal(crossOrigin.status(), 403);
    // A huge or malformed filter is an error on the page, not a crash, and not a filter left out.
    assert.equal((await tenantPage(admin.page, tenantA, `signins?from=${'9'.repeat(5000)}`))?.status(), 400);
    assert.match(await admin.page.textContent('main .problem') ?? '', /from: not a date/);
    assert.equal((await tenantPage(admin.page, tenantA, 'signins?cursor=forged'))?.status(), 400);
    await tenantPage(admin.page, tenantA, 'signins');
    await admin.page.fill('input[name=to]', '2026-02-30');
    await admin.page.click('form.filters button[type=submit]');
    assert.match(await admin.page.textContent('main .problem') ?? '', /to: not a date/);
    assert.equal(await admin.page.locator('table.report').count(), 0, 'no rows for a filter that was not applied');
    assert.equal(await admin.page.inputValue('input[name=to]'), '2026-02-30');
    assert.equal((await admin.page.request.get(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/signins?to=2026-13-01&format=csv`)).status(), 400);
    // A user id with a trailing space is another user: the console blocks that one, as it is spelled.
    const twin = `${userA} `;
    assert.equal((await ask(Subjects.usersRegister, { tenantId: tenantA, userId: twin, displayName: 'Twin' })).error, undefined);
    await tenantPage(admin.page, tenantA, `users?userId=${encodeURIComponent(twin)}`);
    await admin.page.fill('input[name=reason]', 'the twin only');
    await admin.page.click('form[action$="/users/block"] button[type=submit]');
    assert.match(await admin.page.textContent('#block-status') ?? '', /Blocked/);
    assert.notEqual((await ask(Subjects.usersGet, { tenantId: tenantA, userId: twin })).blocked, null);
    assert.equal((await ask(Subjects.usersGet, { tenantId: tenantA, userId: userA })).blocked, null);
    await admin.context.close();

    const nobody = await signIn('nobody');
    assert.match(await nobody.page.textContent('main') ?? '', /no role in this console/);
    await nobody.context.close();

    // A forged session cookie is no session.
    const forged = await browser.newContext();
    await forged.addCookies([{ name: 'mfa-console', value: 'A'.repeat(43), url: consoleUrl }]);
    const page = await forged.newPage();
    await page.goto(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/settings`);
    await page.waitForURL((url) => url.origin === new URL(oidc.issuer).origin);
    await forged.close();
  }, { timeout: 120_000 });
  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'hardware tokens: a tenant admin imports a CSV on the page, follows the job to its end, downloads the refused rows, assigns and activates tokens; the user has them', async () => {
    const { context, page } = await signIn('admin-a');
    const holder = uniqueUser('fob');
    assert.equal((await ask(Subjects.usersRegister, { tenantId: tenantA, userId: holder, displayName: 'Fob Holder' })).error, undefined);
    const [assignedSecret, spareSecret] = [randomBytes(20), randomBytes(20)];
    const csv = [
      OATH_CSV_HEADER,
      `${holder},FOB-1,${base32Encode(assignedSecret)},30,Contoso,Key 30`,
      `,FOB-2,${base32Encode(spareSecret)},30,Contoso,Card`,
      // The seeds' own example: its secret is not Base32 (it has a 1).
      `${holder},FOB-3,1234567abcdef1234567abcdef,30,Contoso,Key 30`,
    ].join('\r\n');

    // The page, from the tenant's navigation; empty at first.
    await tenantPage(page, tenantA, 'overview');
    await page.click('nav a:text-is("Hardware tokens")');
    assert.match(await page.textContent('h1') ?? '', /Hardware tokens/);
    assert.match(await page.textContent('#oath-tokens') ?? '', /No hardware tokens/);
    // The import: the format follows the file's name; the file goes up, the job page opens.
    await page.click('#oath-import-link');
    assert.match(await page.textContent('h1') ?? '', /Import hardware tokens/);
    await page.selectOption('#oath-import select[name=format]', 'pskc');
    await page.setInputFiles('#oath-import input[name=file]', { name: 'fobs.csv', mimeType: 'text/csv', buffer: Buffer.from(csv, 'utf8') });
    assert.equal(await page.inputValue('#oath-import select[name=format]'), 'csv');
    assert.equal(await page.isVisible('#oath-import input[name=password]'), false, 'no password for a CSV file');
    await page.click('#oath-import button[type=submit]');
    await page.waitForURL(/\/oath\/jobs\/[A-Za-z0-9_-]+$/);
    const jobUrl = page.url();
    // The page follows the job (its script polls the console every second) until it ends.
    await page.waitForSelector('#oath-job[data-state="completed"]', { timeout: 60_000 });
    await page.screenshot({ path: join(SHOTS, 'oath-job.png'), fullPage: true });
    assert.deepEqual(
      [await page.getAttribute('#job-progress', 'max'), await page.getAttribute('#job-progress', 'value')],
      ['3', '3'],
      'the progress bar is full',
    );
    assert.equal((await page.textContent('#job-count'))?.trim(), '3 of 3 tokens');
    assert.deepEqual([(await page.textContent('#job-imported'))?.trim(), (await page.textContent('#job-failed'))?.trim()], ['2', '1']);
    assert.equal(await page.locator('#job-error').count(), 0);
    const status = await page.request.get(`${jobUrl}.json`);
    assert.deepEqual(await status.json(), { ...(await status.json()), state: 'completed', total: 3, processed: 3, imported: 2, failed: 1, errors: true });
    // The refused rows, as a CSV download from the imports store.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#job-errors')]);
    const errors = readFileSync((await download.path())!, 'utf8').trim().split(/\r?\n/);
    assert.equal(errors[0], OATH_ERRORS_CSV_HEADER);
    assert.equal(errors.length, 2);
    assert.match(errors[1]!, new RegExp(`^3,${holder.replace(/[.]/g, '\\.')},FOB-3,.*secret key`, 'i'));
    const served = await page.request.get(`${jobUrl}/errors.csv`);
    assert.equal(served.headers()['content-type'], 'text/csv; charset=utf-8');
    assert.match(served.headers()['content-disposition'] ?? '', /^attachment; filename=".+\.csv"$/);
    assert.ok(!(await served.text()).includes('1234567abcdef'), 'no secret in the error file');

    // The inventory, filtered to the unassigned token: assigned to the user on the page.
    await tenantPage(page, tenantA, 'oath');
    await page.selectOption('#oath-filter select[name=state]', 'unassigned');
    await page.click('#oath-filter button[type=submit]');
    await page.waitForURL(/[?&]state=unassigned/);
    assert.deepEqual(await page.locator('#oath-tokens tbody tr[data-serial]').evaluateAll((rows) => rows.map((r) => (r as unknown as { dataset: Record<string, string> }).dataset.serial)), ['FOB-2']);
    await page.screenshot({ path: join(SHOTS, 'oath-tokens.png'), fullPage: true });
    await page.fill('tr[data-serial="FOB-2"] form.oath-assign input[name=userId]', holder);
    await page.click('tr[data-serial="FOB-2"] form.oath-assign button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /FOB-2 is assigned/);
    assert.equal(await page.locator('#oath-tokens tbody tr[data-serial]').count(), 0, 'no unassigned token is left');
    // FOB-1 came assigned from the file: a wrong code changes nothing, the code it shows activates it.
    await tenantPage(page, tenantA, 'oath?state=assigned');
    assert.equal(await page.locator('#oath-tokens tbody tr[data-serial]').count(), 2);
    await page.fill('tr[data-serial="FOB-1"] form.oath-activate input[name=code]', totp(assignedSecret, Date.now()) === '000000' ? '111111' : '000000');
    await page.click('tr[data-serial="FOB-1"] form.oath-activate button[type=submit]');
    assert.match(await page.textContent('.problem') ?? '', /not the code token FOB-1 shows/);
    await page.fill('tr[data-serial="FOB-1"] form.oath-activate input[name=code]', totp(assignedSecret, Date.now()));
    await page.click('tr[data-serial="FOB-1"] form.oath-activate button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /FOB-1 is active/);
    await tenantPage(page, tenantA, 'oath');
    const row = page.locator('tr[data-serial="FOB-1"]');
    assert.equal(await row.getAttribute('data-state'), 'active');
    assert.match(await row.textContent() ?? '', new RegExp(`active\\s*${holder.replace(/[.]/g, '\\.')}\\s*Contoso / Key 30\\s*SHA1, 6 digits, 30 s`));
    assert.doesNotMatch(await row.locator('td:nth-child(7)').textContent() ?? '', /—/, 'its activation time is shown');
    const listed = (await ask(Subjects.oathTokensList, { tenantId: tenantA, limit: 50 })).items as OathTokenItem[];
    assert.deepEqual(listed.map((t) => [t.serialNumber, t.state, t.userId]).sort(), [['FOB-1', 'active', holder], ['FOB-2', 'assigned', holder]]);

    // The user's page shows both: the active one and the one waiting for its first code.
    await tenantPage(page, tenantA, `users?userId=${encodeURIComponent(holder)}`);
    const hardware = page.locator('tr[data-kind="hardware"]');
    assert.equal(await hardware.count(), 2);
    assert.match(await page.textContent('tr[data-kind="hardware"]:has(code:text-is("FOB-1"))') ?? '', /Contoso Key 30\s*hardware, serial FOB-1\s*active/);
    assert.match(await page.textContent('tr[data-kind="hardware"]:has(code:text-is("FOB-2"))') ?? '', /pending/);
    assert.deepEqual((await ask(Subjects.usersGet, { tenantId: tenantA, userId: holder })).methods, ['totp']);
    await context.close();

    // A reader sees the inventory and the job, and changes nothing.
    const reader = await signIn('reader-a');
    await tenantPage(reader.page, tenantA, 'oath');
    assert.equal(await reader.page.locator('#oath-tokens tbody tr[data-serial]').count(), 2);
    assert.equal(await reader.page.locator('#oath-tokens form, #oath-import-link').count(), 0, 'no forms, no import');
    assert.equal((await tenantPage(reader.page, tenantA, 'oath/import'))?.status(), 403);
    assert.equal((await reader.page.goto(jobUrl))?.status(), 200);
    const csrf = await reader.page.inputValue('form[action="/auth/logout"] input[name=_csrf]');
    const posted = await reader.page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/oath/activate`, { form: { _csrf: csrf, serialNumber: 'FOB-2', code: '123456' }, maxRedirects: 0 });
    assert.equal(posted.status(), 403);
    await reader.context.close();
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, 'hardware tokens: a PSKC file of several MB uploads through the object store; without its password the job fails and says why, with it the token is imported; the password is never shown; it is assigned and activated by its serial number on the page', async () => {
    const { context, page } = await signIn('admin-a');
    const secret = randomBytes(32);
    const password = `pässword-${randomBytes(6).toString('hex')}`;
    // Three MB: far beyond what one request to the API may carry (~1000 KiB).
    const file = Buffer.from(passwordPskc('CARD-8', secret, password, 3 * 1024 * 1024), 'utf8');
    const importIt = async (withPassword: boolean) => {
      await tenantPage(page, tenantA, 'oath/import');
      await page.setInputFiles('#oath-import input[name=file]', { name: 'vendor.pskc', mimeType: 'application/octet-stream', buffer: file });
      assert.equal(await page.inputValue('#oath-import select[name=format]'), 'pskc');
      if (withPassword) {
        await page.fill('#oath-import input[name=password]', password);
        await page.screenshot({ path: join(SHOTS, 'oath-import.png'), fullPage: true });
      }
      await page.click('#oath-import button[type=submit]');
      await page.waitForURL(/\/oath\/jobs\/[A-Za-z0-9_-]+$/);
      await page.waitForSelector('#oath-job[data-state="completed"], #oath-job[data-state="failed"]', { timeout: 60_000 });
      assert.ok(!(await page.content()).includes(password), 'the password is never shown back');
    };
    await importIt(false);
    assert.equal(await page.getAttribute('#oath-job', 'data-state'), 'failed');
    assert.match(await page.textContent('#job-error') ?? '', /encrypted with .*password.*: give password/);
    assert.equal(await page.locator('#job-errors').count(), 0, 'no error file: no row was read');
    await importIt(true);
    assert.equal(await page.getAttribute('#oath-job', 'data-state'), 'completed');
    assert.deepEqual([(await page.textContent('#job-imported'))?.trim(), (await page.textContent('#job-failed'))?.trim()], ['1', '0']);
    await tenantPage(page, tenantA, 'oath?state=unassigned');
    assert.match(await page.textContent('tr[data-serial="CARD-8"]') ?? '', /unassigned\s*—\s*Acme \/ Card 8\s*SHA256, 8 digits, 60 s/);
    // Assigned and activated by its serial number, without finding its row.
    const cardHolder = uniqueUser('card');
    assert.equal((await ask(Subjects.usersRegister, { tenantId: tenantA, userId: cardHolder })).error, undefined);
    await tenantPage(page, tenantA, 'oath');
    await page.fill('#oath-assign-serial input[name=serialNumber]', 'CARD-8');
    await page.fill('#oath-assign-serial input[name=userId]', cardHolder);
    await page.click('#oath-assign-serial button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', new RegExp(`CARD-8 is assigned to ${cardHolder.replace(/[.]/g, '\\.')}`));
    await page.fill('#oath-activate-serial input[name=serialNumber]', 'CARD-8');
    await page.fill('#oath-activate-serial input[name=code]', totp(secret, Date.now(), { algorithm: 'SHA256', digits: 8, period: 60 }));
    await page.click('#oath-activate-serial button[type=submit]');
    assert.match(await page.textContent('.notice') ?? '', /CARD-8 is active/);
    const card = ((await ask(Subjects.oathTokensList, { tenantId: tenantA, limit: 50 })).items as OathTokenItem[]).find((t) => t.serialNumber === 'CARD-8');
    assert.deepEqual([card?.state, card?.userId], ['active', cardHolder]);
    // A serial the tenant does not have is refused, not created.
    await page.fill('#oath-assign-serial input[name=serialNumber]', 'NO-SUCH-FOB');
    await page.fill('#oath-assign-serial input[name=userId]', cardHolder);
    const [unknown] = await Promise.all([page.waitForNavigation(), page.click('#oath-assign-serial button[type=submit]')]);
    assert.equal(unknown?.status(), 404);
    // A pre-shared key that is not one is refused before anything is uploaded.
    await tenantPage(page, tenantA, 'oath/import');
    await page.setInputFiles('#oath-import input[name=file]', { name: 'vendor.xml', mimeType: 'application/xml', buffer: Buffer.from(passwordPskc('CARD-9', secret, password), 'utf8') });
    await page.fill('#oath-import input[name=psk]', 'not hex');
    await page.click('#oath-import button[type=submit]');
    assert.match(await page.textContent('#import-result.problem') ?? '', /pre-shared key must be an AES key in hex/);
    // The API refuses what the page would not send: a password for a CSV file; the upload is dropped.
    const csrf = await page.inputValue('form[action="/auth/logout"] input[name=_csrf]');
    const uploaded = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/oath/upload`, { headers: { 'Content-Type': 'application/octet-stream', 'X-CSRF-Token': csrf }, data: Buffer.from(`${OATH_CSV_HEADER}\r\n`) });
    assert.equal(uploaded.status(), 200);
    const { object } = (await uploaded.json()) as { object: string };
    assert.match(object, new RegExp(`^${tenantA}/console-[0-9a-f-]{36}$`));
    const refused = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/oath/import`, { headers: { 'X-CSRF-Token': csrf }, form: { format: 'csv', object, password } });
    assert.equal(refused.status(), 400);
    assert.ok(!(await refused.text()).includes(password));
    const again = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/oath/import`, { headers: { 'X-CSRF-Token': csrf }, form: { format: 'csv', object } });
    assert.equal(again.status(), 404, 'the refused upload is gone');
    // Only this console's uploads of this tenant can be named; without the CSRF token, nothing at all.
    const foreign = await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/oath/import`, { headers: { 'X-CSRF-Token': csrf }, form: { format: 'csv', object: `${tenantB}/console-${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}` } });
    assert.equal(foreign.status(), 400);
    assert.equal((await page.request.post(`${consoleUrl}/t/${encodeURIComponent(tenantA)}/oath/upload`, { headers: { 'Content-Type': 'application/octet-stream' }, data: Buffer.from(OATH_CSV_HEADER) })).status(), 403);
    await context.close();
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['oidc-provider', 'chromium'] }, "usage for billing: a period by day shown and downloaded as CSV with the same figures; a period longer than the contract allows is refused", async () => {
    const { context, page } = await signIn('ops');
    const dayMs = 86_400_000;
    const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);
    // Yesterday to tomorrow: the sign-ins of the suite's start, even across midnight.
    const [from, to] = [dayOf(Date.now() - dayMs), dayOf(Date.now() + dayMs)];
    await tenantPage(page, tenantA, 'usage');
    await page.fill('#usage-period input[name=from]', from);
    await page.fill('#usage-period input[name=to]', to);
    await page.selectOption('#usage-period select[name=granularity]', 'day');
    await page.click('#usage-period button[type=submit]');
    await page.waitForURL(/[?&]granularity=day/);
    const rows = async () => (await page.locator('#usage tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => (td.textContent ?? '').trim())))) as string[][];
    // The report counts the suite's sign-ins (at least the approved and the denied one) once its projection has them.
    await eventually(async () => ((await page.reload(), (await rows()).reduce((n, r) => n + Number(r[1] ?? 0), 0)) >= 2 ? true : undefined), 70_000, 'the sign-ins counted');
    const shown = await rows();
    assert.deepEqual(shown.map((r) => r[0]), [dayOf(Date.now()), from], 'one row per day, newest first');
    await page.screenshot({ path: join(SHOTS, 'usage.png'), fullPage: true });
    const [file] = await Promise.all([page.waitForEvent('download'), page.click('#usage-period a[download]')]);
    assert.equal(file.suggestedFilename(), `usage-${tenantA}.csv`);
    const csv = readFileSync((await file.path())!, 'utf8').trim().split(/\r?\n/);
    assert.equal(csv[0], 'period,authentications,succeeded,failed,sms,voice,push,totp,none,enabledUsers');
    // Oldest first, the page's figures; its by-method cell (`totp 1/1, none 0/1`) as a column per
    // method, each the method's sign-ins, 0 for one the day did not see.
    const perMethod = (cell: string) => {
      const counts = new Map([...cell.matchAll(/(\S+) (\d+)\/(\d+)/g)].map(([, method, success, failure]) => [method!, Number(success) + Number(failure)]));
      return ['sms', 'voice', 'push', 'totp', 'none'].map((method) => counts.get(method) ?? 0);
    };
    assert.deepEqual(csv.slice(1), [...shown].reverse().map((r) => [r[0], r[1], r[2], r[3], ...perMethod(r[4]!), r[5]].join(',')));
    assert.ok(csv.slice(1).every((row) => {
      const cells = row.split(',').map(Number);
      return cells.slice(4, 9).reduce((n, c) => n + c, 0) === cells[1];
    }), `every sign-in under one method: ${csv.join(' | ')}`);
    // Three years by day is more than reports.usage.query answers: the page says so, and offers no CSV.
    const refused = await tenantPage(page, tenantA, `usage?from=${dayOf(Date.now() - 3 * 365 * dayMs)}&to=${to}&granularity=day`);
    assert.equal(refused?.status(), 400);
    assert.match(await page.textContent('.problem') ?? '', /at most .*731 days/);
    assert.equal(await page.locator('#usage-period a[download]').count(), 0);
    await context.close();
  }, { timeout: 150_000 });
});
