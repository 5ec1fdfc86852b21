import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream } from '@nats-io/jetstream';
import { Headers, MAX_IMPORT_REQUEST_BYTES, OATH_CSV_HEADER, OATH_ERRORS_CSV_HEADER, parseEvent, Streams, Subjects, type AnyEvent, type OathTokenItem } from '@mfa/contracts';
import { requestJson } from '@mfa/messaging';
import { Attr, Code, decodePacket, encodeResponse } from '@mfa/radius/packet';
import { base32Decode, base32Encode, totp } from '@mfa/crypto';
import { eventually, hasOathtool, itWith, oathtoolTotp, repoRoot, startStack, testDatabaseUrl, testEnv, toneWav, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

const run = promisify(execFile);
const MFA = join(repoRoot, 'cli', 'bin', 'mfa.js');

/** A PSKC file (RFC 6030 §6.1) of one TOTP key encrypted with a pre-shared AES-128 key (CBC, the IV first). */
function pskPskc(serial: string, secret: Buffer, psk: Buffer): string {
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-128-cbc', psk, iv);
  const value = Buffer.concat([iv, cipher.update(secret), cipher.final()]).toString('base64');
  return `<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
  <pskc:EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></pskc:EncryptionKey>
  <pskc:KeyPackage>
    <pskc:DeviceInfo><pskc:Manufacturer>Acme</pskc:Manufacturer><pskc:SerialNo>${serial}</pskc:SerialNo></pskc:DeviceInfo>
    <pskc:Key Id="${serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <pskc:AlgorithmParameters><pskc:ResponseFormat Length="6" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret><pskc:EncryptedValue><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/><xenc:CipherData><xenc:CipherValue>${value}</xenc:CipherValue></xenc:CipherData></pskc:EncryptedValue></pskc:Secret>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>
</pskc:KeyContainer>
`;
}

/** `npx mfa …` against the whole stack with API keys on, as an operator and as an IdP would use it. */
describe('the mfa command line', () => {
  const platformKey = randomBytes(36).toString('base64url');
  const tenantId = uniqueTenant('cli');
  let stack: Stack;
  let nc: NatsConnection;

  /** Runs the CLI; resolves with its exit code and output (never rejects on a non-zero exit). */
  async function mfa(args: string[], apiKey = platformKey, env: Record<string, string> = {}, input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const running = run(process.execPath, [MFA, ...args], { env: { ...process.env, NATS_URL: testEnv.natsUrl, MFA_API_KEY: apiKey, ...env }, timeout: 60_000 });
      if (input !== undefined) running.child.stdin?.end(input);
      const { stdout, stderr } = await running;
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  }
  const json = async (args: string[], apiKey?: string) => {
    const result = await mfa(args, apiKey);
    assert.equal(result.code, 0, `mfa ${args.join(' ')}: ${result.stderr}`);
    return JSON.parse(result.stdout) as Record<string, unknown>;
  };

  before(async () => {
    stack = await startStack({
      env: {
        NODE_ENV: 'test',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connect({ servers: testEnv.natsUrl, name: 'e2e-cli' });
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'has --help on every command', async () => {
    const top = await mfa(['--help']);
    assert.equal(top.code, 0);
    for (const group of ['tenants', 'clients', 'users', 'apppasswords', 'challenges', 'fraud', 'reports', 'voice-messages', 'oath', 'radius']) {
      assert.match(top.stdout, new RegExp(`\\b${group}\\b`));
      const help = await mfa([group, '--help']);
      assert.equal(help.code, 0, group);
      const commands = [...help.stdout.matchAll(/^ {2}([a-z-]+)(?: \[options\])? ?(?:<|\[|$)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
      assert.ok(commands.length > 0, `${group} lists its commands`);
      for (const command of commands) {
        const sub = await mfa([group, command, '--help']);
        assert.equal(sub.code, 0, `${group} ${command} --help`);
        assert.match(sub.stdout, /^Usage: mfa /m);
      }
    }
    assert.match((await mfa(['tenants', '--help'])).stdout, /^ {2}delete \[options\] <tenant>/m);
    const deleteHelp = (await mfa(['tenants', 'delete', '--help'])).stdout.replace(/\s+/g, ' ');
    for (const said of ['--yes', 'cannot be undone', '--wait', '--wait-timeout <seconds>', 'platform key only']) assert.ok(deleteHelp.includes(said), `tenants delete --help says ${said}: ${deleteHelp}`);
    const usersHelp = (await mfa(['users', '--help'])).stdout;
    assert.match(usersHelp, /^ {2}totp-enroll \[options\] <tenant> <user>/m);
    assert.match(usersHelp, /^ {2}totp-activate <tenant> <user> <tokenId> <code>/m);
    // users reset says what the reset clears (docs/api.md, users.reset), and what stays.
    const reset = (await mfa(['users', 'reset', '--help'])).stdout.replace(/\s+/g, ' ');
    for (const cleared of ['TOTP tokens', 'hardware', 'phone number', 'authenticator apps', 'app passwords', 'voice PIN', 'remembered browsers', 'name, e-mail and language stay']) assert.ok(reset.includes(cleared), `users reset --help names ${cleared}: ${reset}`);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'totp-enroll prints the token id, the otpauth URI and its QR code; totp-activate activates the token with the code the app shows; a wrong code is exit code 1', async () => {
    const tenant = uniqueTenant('cli-totp');
    await json(['tenants', 'configure', tenant]);
    const userId = uniqueUser('totp');
    await json(['users', 'register', tenant, userId]);

    const enrolled = await mfa(['users', 'totp-enroll', tenant, userId, '--label', 'Work phone']);
    assert.equal(enrolled.code, 0, enrolled.stderr);
    const tokenId = /^token id {5}(\S+)$/m.exec(enrolled.stdout)?.[1];
    const uri = /^otpauth URI {2}(otpauth:\/\/totp\/\S+)$/m.exec(enrolled.stdout)?.[1];
    assert.ok(tokenId && uri, enrolled.stdout);
    assert.match(enrolled.stdout, /^\x1b\[47m\x1b\[30m[ ▀▄█]{20,}\x1b\[0m$/m, 'a QR code drawn in the terminal, as push-enroll draws it');
    assert.match(enrolled.stdout, /^pending: 6 digits every 30 s \(SHA1\); activate within 10 minutes$/m);
    assert.equal(enrolled.stderr, `next: mfa users totp-activate ${tenant} ${userId} ${tokenId} <code>\n`);
    const params = new URL(uri).searchParams;
    assert.match(uri, /^otpauth:\/\/totp\/[^?]*Work%20phone\?/);
    assert.deepEqual([params.get('algorithm'), params.get('digits'), params.get('period')], ['SHA1', '6', '30']);
    const secret = params.get('secret') ?? '';
    assert.match(secret, /^[A-Z2-7]{32}$/);
    assert.equal(enrolled.stdout.split(secret).length, 2, 'the secret is printed only inside the URI');
    const pending = ((await json(['users', 'get', tenant, userId])).tokens as Array<Record<string, unknown>>).find((t) => t.tokenId === tokenId);
    assert.equal(pending?.state, 'pending');

    // The code the app shows now (oathtool: an independent implementation, when installed).
    const codeAt = (at: number) => (hasOathtool() ? oathtoolTotp(secret, { at: new Date(at) }) : totp(base32Decode(secret), at));
    const activated = await mfa(['users', 'totp-activate', tenant, userId, tokenId, codeAt(Date.now())]);
    assert.equal(activated.code, 0, activated.stderr);
    assert.deepEqual(JSON.parse(activated.stdout), { tokenId, active: true });
    const user = await json(['users', 'get', tenant, userId]);
    assert.equal((user.tokens as Array<Record<string, unknown>>).find((t) => t.tokenId === tokenId)?.state, 'active');
    assert.deepEqual(user.methods, ['totp']);
    const again = await mfa(['users', 'totp-activate', tenant, userId, tokenId, '000000']);
    assert.deepEqual([again.code, again.stdout], [1, '']);
    assert.match(again.stderr, /^mfa: conflict: token is already active$/m);

    // As JSON (--format json): the reply without a second copy of the secret; a wrong code for a
    // pending token answers active: false, exit code 1, and changes nothing.
    const asJson = await mfa(['--format', 'json', 'users', 'totp-enroll', tenant, userId]);
    assert.equal(asJson.code, 0, asJson.stderr);
    const second = JSON.parse(asJson.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(second).sort(), ['algorithm', 'digits', 'otpauthUri', 'period', 'tokenId']);
    const secondSecret = new URL(String(second.otpauthUri)).searchParams.get('secret') ?? '';
    const shown = [-30_000, 0, 30_000].map((d) => codeAt(Date.now() + d));
    const wrong = ['000000', '111111', '222222', '333333'].find((c) => !shown.includes(c))!;
    const refused = await mfa(['users', 'totp-activate', tenant, userId, String(second.tokenId), wrong]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.deepEqual(JSON.parse(refused.stdout), { tokenId: second.tokenId, active: false });
    assert.match(refused.stderr, /not the code the app shows now; nothing changed/);
    assert.ok(!`${refused.stdout}${refused.stderr}${asJson.stderr}`.includes(secondSecret), 'the secret is never in a message');
    assert.equal(((await json(['users', 'get', tenant, userId])).tokens as Array<Record<string, unknown>>).find((t) => t.tokenId === second.tokenId)?.state, 'pending');
    // An unknown user: the contract's error, exit code 1.
    const unknown = await mfa(['users', 'totp-enroll', tenant, uniqueUser('nobody')]);
    assert.deepEqual([unknown.code, unknown.stdout], [1, '']);
    assert.match(unknown.stderr, /^mfa: not_found: /m);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'reports usage says on standard error when it shows only the first page of periods', async () => {
    const tenant = uniqueTenant('cli-usage');
    await json(['tenants', 'configure', tenant]);
    const from = '2026-11-02T00:00:00Z';
    const to = '2026-11-03T00:00:00Z';
    // 1440 minutes: one page of 500.
    const truncated = await mfa(['reports', 'usage', tenant, '--from', from, '--to', to, '--granularity', 'minute']);
    assert.equal(truncated.code, 0, truncated.stderr);
    assert.equal(truncated.stdout.trim().split('\n').length, 2 + 500);
    assert.equal(truncated.stderr, 'mfa: truncated at 500 periods (one page): narrow --from/--to (the rest begins at --from 2026-11-02T08:20:00Z), take a coarser --granularity, or add --all for every period\n');
    const asJson = await mfa(['--format', 'json', 'reports', 'usage', tenant, '--from', from, '--to', to, '--granularity', 'minute']);
    assert.equal((JSON.parse(asJson.stdout) as unknown[]).length, 500);
    assert.match(asJson.stderr, /^mfa: truncated at 500 periods/);
    // Every page, or a range that fits one page: nothing said.
    const all = await mfa(['--format', 'json', 'reports', 'usage', tenant, '--from', from, '--to', to, '--granularity', 'minute', '--all']);
    assert.deepEqual([all.code, (JSON.parse(all.stdout) as unknown[]).length, all.stderr], [0, 1440, '']);
    // Where the hint says the rest begins, exactly one page (500 minutes): all of it, nothing said.
    const next = await mfa(['reports', 'usage', tenant, '--from', '2026-11-02T08:20:00Z', '--to', '2026-11-02T16:40:00Z', '--granularity', 'minute']);
    const nextRows = next.stdout.trim().split('\n');
    assert.deepEqual([next.code, nextRows.length, next.stderr], [0, 2 + 500, '']);
    assert.match(nextRows[2]!, /^2026-11-02T08:20:00\.000Z\s/);
    const days = await mfa(['reports', 'usage', tenant, '--from', '2026-01-01T00:00:00Z', '--to', '2027-01-01T00:00:00Z']);
    assert.deepEqual([days.code, days.stdout.trim().split('\n').length, days.stderr], [0, 2 + 365, '']);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'users list and the reports go a page at a time: a page left out is named on standard error with its --cursor, which prints the next; --not-blocked and --method; apppasswords list names each app password, never the password', async () => {
    const tenant = uniqueTenant('cli-pages');
    await json(['tenants', 'configure', tenant, '--set', 'appPasswords.allowed=true']);
    const ids = ['pg-anna', 'pg-bertil', 'pg-cecilia'];
    for (const id of ids) await json(['users', 'register', tenant, id]);
    const first = await mfa(['--format', 'json', 'users', 'list', tenant, '--limit', '2']);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual((JSON.parse(first.stdout) as Array<{ userId: string }>).map((u) => u.userId), ids.slice(0, 2));
    const cursor = /^more: --cursor (\S+)\n$/.exec(first.stderr)?.[1];
    assert.ok(cursor, `the next page named: ${first.stderr}`);
    const second = await mfa(['--format', 'json', 'users', 'list', tenant, '--limit', '2', '--cursor', cursor]);
    assert.deepEqual([second.code, (JSON.parse(second.stdout) as Array<{ userId: string }>).map((u) => u.userId), second.stderr], [0, ids.slice(2), '']);
    // Blocked or not.
    await json(['users', 'block', tenant, 'pg-bertil', '--reason', 'phone reported stolen']);
    const notBlocked = await json(['--format', 'json', 'users', 'list', tenant, '--not-blocked', '--all']);
    assert.deepEqual((notBlocked as unknown as Array<{ userId: string }>).map((u) => u.userId), ['pg-anna', 'pg-cecilia']);
    // By method: pg-cecilia has a phone (sms, voice), the others none.
    await json(['users', 'register', tenant, 'pg-cecilia', '--phone', '+14155550142']);
    assert.deepEqual(((await json(['--format', 'json', 'users', 'list', tenant, '--method', 'sms'])) as unknown as Array<{ userId: string }>).map((u) => u.userId), ['pg-cecilia']);
    assert.deepEqual(((await json(['--format', 'json', 'users', 'list', tenant, '--method', 'none'])) as unknown as Array<{ userId: string }>).map((u) => u.userId), ['pg-anna', 'pg-bertil']);
    const unknownMethod = await mfa(['users', 'list', tenant, '--method', 'email']);
    assert.deepEqual([unknownMethod.code, /Allowed choices are sms, voice, push, totp, none/.test(unknownMethod.stderr)], [1, true], unknownMethod.stderr);
    const both = await mfa(['users', 'list', tenant, '--blocked', '--not-blocked']);
    assert.deepEqual([both.code, /--not-blocked.*cannot be used with.*--blocked/.test(both.stderr)], [1, true], both.stderr);
    // A report the same way: the audit trail has the block and the configure (newest first).
    const newest = await mfa(['--format', 'json', 'reports', 'audit', tenant, '--limit', '1']);
    const auditCursor = /^more: --cursor (\S+)\n$/.exec(newest.stderr)?.[1];
    assert.ok(auditCursor, `the next page named: ${newest.stderr}`);
    const older = await mfa(['--format', 'json', 'reports', 'audit', tenant, '--limit', '1', '--cursor', auditCursor]);
    assert.equal(older.code, 0, older.stderr);
    const [a, b] = [JSON.parse(newest.stdout) as Array<{ subject: string }>, JSON.parse(older.stdout) as Array<{ subject: string }>];
    assert.deepEqual([a.map((r) => r.subject), b.length], [['mfa.v1.users.block'], 1]);
    assert.notEqual(b[0]!.subject, 'mfa.v1.users.block', 'the next page, not the first again');
    // App passwords by name.
    const outlook = await json(['apppasswords', 'create', tenant, 'pg-anna', '--name', 'Outlook 2010']);
    const printer = await json(['apppasswords', 'create', tenant, 'pg-anna']);
    const listed = (await json(['--format', 'json', 'apppasswords', 'list', tenant, 'pg-anna'])) as unknown as Array<Record<string, unknown>>;
    assert.deepEqual(
      listed.map((p) => [p.appPasswordId, p.name]),
      [
        [outlook.appPasswordId, 'Outlook 2010'],
        [printer.appPasswordId, null],
      ],
    );
    const table = await mfa(['apppasswords', 'list', tenant, 'pg-anna']);
    assert.match(table.stdout, /appPasswordId\s+name\s+createdAt/);
    assert.ok(table.stdout.includes(String(outlook.appPasswordId)) && !table.stdout.includes(String(outlook.password)), table.stdout);
    await json(['apppasswords', 'delete', tenant, 'pg-anna', '--id', String(outlook.appPasswordId)]);
    assert.deepEqual(((await json(['--format', 'json', 'apppasswords', 'list', tenant, 'pg-anna'])) as unknown as Array<Record<string, unknown>>).map((p) => p.appPasswordId), [printer.appPasswordId]);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'an operator configures a tenant, creates a key, manages a user; an integrator signs the user in; the reports come out as table, JSON and CSV', async () => {
    const configured = await json(['tenants', 'configure', tenantId, '--set', 'maxAttempts=3', '--set', 'lockout.threshold=7', '--json', '{"codeLifetimeSeconds":240}']);
    assert.deepEqual([(configured.settings as Record<string, unknown>).maxAttempts, ((configured.settings as Record<string, Record<string, unknown>>).lockout)!.threshold, (configured.settings as Record<string, unknown>).codeLifetimeSeconds], [3, 7, 240]);
    assert.equal(((await json(['tenants', 'get', tenantId])).settings as Record<string, unknown>).maxAttempts, 3);

    const idp = await json(['clients', 'create', tenantId, '--name', 'cli idp', '--scopes', 'challenges,users,reports']);
    const idpKey = String(idp.apiKey);
    assert.match(idpKey, /^mfak\./);
    const listed = await mfa(['clients', 'list', tenantId]);
    assert.match(listed.stdout, /cli idp/);

    const userId = uniqueUser('cli');
    await json(['users', 'register', tenantId, userId, '--name', 'Cli User', '--phone', '+14155550133'], idpKey);
    const enrolled = await requestJson<Record<string, unknown>>(nc, Subjects.totpEnroll, { tenantId, userId }, { headers: { Authorization: `Bearer ${idpKey}` } });
    const secret = base32Decode(String(enrolled.secret));
    // One reference time: the approval below uses the step after the activation's, whatever the clock does meanwhile.
    const t0 = Date.now();
    await requestJson(nc, Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, t0) }, { headers: { Authorization: `Bearer ${idpKey}` } });
    const user = await json(['users', 'get', tenantId, userId], idpKey);
    assert.deepEqual([user.displayName, user.methods, user.blocked], ['Cli User', ['totp', 'sms', 'voice'], null]);

    const found = await mfa(['--format', 'json', 'users', 'list', tenantId, '--query', 'cli user'], idpKey);
    assert.deepEqual((JSON.parse(found.stdout) as Array<Record<string, unknown>>).map((u) => [u.userId, u.displayName]), [[userId, 'Cli User']]);
    const byPhone = await mfa(['users', 'list', tenantId, '--query', '+1415555013'], idpKey);
    assert.match(byPhone.stdout, new RegExp(userId.replace(/[.]/g, '\\.')));
    // The IdP simulation: start, verify, status.
    const started = await json(['challenges', 'start', tenantId, userId, '--method', 'totp', '--ip', '198.51.100.3', '--app', 'CLI'], idpKey);
    assert.equal(started.status, 'pending');
    const verified = await json(['challenges', 'verify', tenantId, String(started.challengeId), totp(secret, t0 + 30_000)], idpKey);
    assert.equal(verified.status, 'approved');
    assert.equal((await json(['challenges', 'status', tenantId, String(started.challengeId)], idpKey)).status, 'approved');
    // A resend reaches auth-challenge with the IdP's key (challenges scope): an app's code is not sent.
    assert.match((await mfa(['challenges', 'resend', tenantId, String(started.challengeId)], idpKey)).stderr, /conflict: only an SMS challenge's code can be sent again \(this one is totp\)/);

    // Block and unblock (admin: the platform key).
    assert.ok((await json(['users', 'block', tenantId, userId, '--reason', 'cli test'])).blockedUntil);
    assert.equal((await json(['challenges', 'start', tenantId, userId], idpKey)).reason, 'user_blocked');
    assert.equal((await json(['users', 'unblock', tenantId, userId, '--reason', '＝HYPERLINK("https://example.com")'])).unblocked, true);
    // users delete --only-if-key-erased completes only an erasure the key store made (after a
    // restore): the user's key is live, so nothing is erased.
    const notErased = await mfa(['users', 'delete', tenantId, userId, '--yes', '--only-if-key-erased', '1']);
    assert.equal(notErased.code, 1);
    assert.match(notErased.stderr, /conflict: the user’s data key \(generation 1\) is live: no erasure of generation 1 to complete; nothing erased/);

    // Reports in three formats.
    const csv = await eventually(async () => {
      const out = await mfa(['--format', 'csv', 'reports', 'signins', tenantId, '--user', userId, '--all'], idpKey);
      return out.stdout.split('\n').filter(Boolean).length >= 3 ? out.stdout : undefined;
    }, 20_000, 'the sign-ins in the report');
    const lines = csv.trim().split('\n');
    assert.equal(lines[0], 'occurredAt,userId,displayName,authMethod,result,resultDetail,clientIp,application,via,serverName,challengeId,deviceId');
    assert.ok(lines.some((l) => l.includes('MFA successfully completed') && l.includes('198.51.100.3') && l.includes('CLI,nats,')));
    assert.ok(lines.some((l) => l.includes('MFA denied; user is blocked')));
    const asJson = JSON.parse((await mfa(['--format', 'json', 'reports', 'signins', tenantId, '--user', userId], idpKey)).stdout) as unknown[];
    assert.equal(asJson.length, lines.length - 1);
    // A reason a spreadsheet would run as a formula (a full-width `=`) is quoted in CSV.
    const blockedCsv = (await mfa(['--format', 'csv', 'reports', 'blocked', tenantId, '--user', userId], idpKey)).stdout;
    assert.match(blockedCsv, /,"'＝HYPERLINK\(""https:\/\/example\.com""\)",/);
    const table = await mfa(['reports', 'blocked', tenantId, '--user', userId], idpKey);
    assert.match(table.stdout, /^occurredAt\s+action\s+userId/m);
    assert.match(table.stdout, /unblock\s+/);
    const today = new Date().toISOString().slice(0, 10);
    const usage = await mfa(['reports', 'usage', tenantId, '--from', `${today}T00:00:00Z`, '--to', new Date(Date.parse(`${today}T00:00:00Z`) + 86_400_000).toISOString()], idpKey);
    assert.match(usage.stdout, new RegExp(`^${today}\\s+2\\s+1\\s+1\\s+1\\b`, 'm'));
    // Usage by method as one column per method, in a fixed order, 0 for a method not used: in the table and the CSV.
    assert.match(usage.stdout, /^period\s+authentications\s+success\s+failure\s+enabledUsers\s+sms\s+voice\s+push\s+totp\s+none$/m);
    const usageArgs = ['reports', 'usage', tenantId, '--from', `${today}T00:00:00Z`, '--to', new Date(Date.parse(`${today}T00:00:00Z`) + 86_400_000).toISOString()];
    const usageCsv = (await mfa(['--format', 'csv', ...usageArgs], idpKey)).stdout.trim().split('\n');
    assert.deepEqual(usageCsv, ['period,authentications,success,failure,enabledUsers,sms,voice,push,totp,none', `${today},2,1,1,1,0,0,0,1,1`], 'the approved totp sign-in and the blocked one, which never had a method');
    // JSON keeps the reply's byMethod as it is.
    const usageJson = JSON.parse((await mfa(['--format', 'json', ...usageArgs], idpKey)).stdout) as Array<{ byMethod: unknown }>;
    assert.deepEqual(usageJson.map((r) => r.byMethod), [[{ method: 'none', success: 0, failure: 1 }, { method: 'totp', success: 1, failure: 0 }]]);
    // A lost phone: the token goes, then every method; the next sign-in asks to register again.
    const tokenId = String(((await json(['users', 'get', tenantId, userId], idpKey)).tokens as Array<Record<string, unknown>>)[0]!.tokenId);
    assert.equal((await json(['users', 'delete-token', tenantId, userId, tokenId], idpKey)).deleted, true);
    assert.deepEqual((await json(['users', 'get', tenantId, userId], idpKey)).methods, ['sms', 'voice']);
    // The PIN of voice PIN mode, kept out of the command line.
    const pinSet = await mfa(['users', 'set-pin', tenantId, userId], idpKey, { MFA_PIN: '2468' });
    assert.equal(pinSet.code, 0, pinSet.stderr);
    assert.equal(JSON.parse(pinSet.stdout).pinSet, true);
    assert.match((await mfa(['users', 'set-pin', tenantId, userId], idpKey, { MFA_PIN: '12' })).stderr, /invalid_request/);
    // A recording of a call's message: uploaded from a file, listed, refused when it is not audio, deleted.
    const folder = mkdtempSync(join(tmpdir(), 'mfa-cli-'));
    writeFileSync(join(folder, 'greeting.wav'), toneWav(1));
    writeFileSync(join(folder, 'greeting.mp3'), 'this is text, whatever the name says');
    const uploaded = await json(['voice-messages', 'upload', tenantId, 'greetingPin', 'sv', join(folder, 'greeting.wav')]);
    assert.deepEqual([uploaded.type, uploaded.language, uploaded.format, uploaded.durationSeconds], ['greetingPin', 'sv', 'wav', 1]);
    assert.match((await mfa(['voice-messages', 'upload', tenantId, 'greetingPin', 'sv', join(folder, 'greeting.mp3')])).stderr, /invalid_request: the file is not a WAV or MP3/);
    assert.match((await mfa(['voice-messages', 'list', tenantId])).stdout, /^greetingPin\s+sv\s+wav\s+16044\s+1\s/m);
    assert.match((await mfa(['voice-messages', 'list', tenantId], idpKey)).stderr, /forbidden/, 'recordings are admin');
    assert.equal((await json(['voice-messages', 'delete', tenantId, 'greetingPin', 'sv'])).deleted, true);
    assert.match((await mfa(['voice-messages', 'list', tenantId])).stdout, /\(none\)/);
    assert.match((await mfa(['users', 'reset', tenantId, userId], idpKey)).stderr, /forbidden/, 'reset is admin');
    assert.equal((await json(['users', 'reset', tenantId, userId])).reset, true);
    assert.deepEqual((await json(['users', 'get', tenantId, userId], idpKey)).methods, []);
    const again = await json(['challenges', 'start', tenantId, userId], idpKey);
    assert.deepEqual([again.status, again.reason], ['registration_required', 'no_method_registered']);
    assert.match((await mfa(['users', 'delete-token', tenantId, userId, tokenId], idpKey)).stderr, /not_found/);
    assert.equal((await mfa(['clients', 'revoke', tenantId, String(idp.clientId)])).code, 0);
    assert.match((await mfa(['users', 'get', tenantId, userId], idpKey)).stderr, /forbidden/);
  });

  /** The challenge events of a tenant since `since`, from MFA_CHALLENGES. */
  async function challengeEvents(tenant: string, since: Date): Promise<AnyEvent[]> {
    const consumer = await jetstream(nc).consumers.get(Streams.challenges.name, { filter_subjects: 'mfa.evt.challenge.>', deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() });
    const out: AnyEvent[] = [];
    for (;;) {
      let n = 0;
      for await (const m of await consumer.fetch({ max_messages: 500, expires: 1000 })) {
        n++;
        out.push(parseEvent(m.json()));
      }
      if (n === 0) break;
    }
    return out.filter((e) => e.tenantId === tenant);
  }

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'the description names every command group', async () => {
    const top = (await mfa(['--help'])).stdout;
    const description = top.slice(0, top.indexOf('\nOptions:')).replace(/\s+/g, ' ');
    const groups = [...top.slice(top.indexOf('\nCommands:')).matchAll(/^ {2}([a-z-]+)\b/gm)].map((m) => m[1]!).filter((g) => g !== 'help');
    assert.deepEqual(groups.sort(), ['apppasswords', 'challenges', 'clients', 'fraud', 'oath', 'radius', 'reports', 'tenants', 'users', 'voice-messages']);
    for (const group of groups) assert.match(description, new RegExp(`(^|[ (:,])${group}\\b`), `the description names ${group}: ${description}`);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'a command loads the NATS client and the contract, not the services’ tracing and metrics; the QR code library only when it prints one', async () => {
    // Every module the process loads, as Node resolves it, on standard error.
    const hook = `import { registerHooks } from 'node:module'; registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); process.stderr.write('loaded ' + r.url + '\\n'); return r; } });`;
    const loaded = async (args: string[]) => {
      const { stderr } = await run(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(hook)}`, MFA, ...args], {
        env: { ...process.env, NATS_URL: testEnv.natsUrl, MFA_API_KEY: platformKey },
        timeout: 60_000,
      });
      return [...stderr.matchAll(/^loaded (.+)$/gm)].map((m) => m[1]!);
    };
    const heavy = (urls: string[]) => urls.filter((url) => /\/node_modules\/(@opentelemetry\/|prom-client\/|qrcode\/)|\/libs\/telemetry\//.test(url));
    const help = await loaded(['--help']);
    assert.ok(help.some((url) => url.includes('/cli/dist/main.js')), `the hook saw the CLI load: ${help.length} modules`);
    assert.deepEqual(heavy(help), []);
    const tenant = uniqueTenant('cli-load');
    const configured = await loaded(['tenants', 'configure', tenant]);
    assert.ok(configured.some((url) => /\/@nats-io\/transport-node\//.test(url)), 'a command connects to NATS');
    assert.deepEqual(heavy(configured), []);
    const userId = uniqueUser('qr');
    await json(['users', 'register', tenant, userId]);
    const enrolled = await loaded(['users', 'totp-enroll', tenant, userId]);
    assert.deepEqual([...new Set(heavy(enrolled).map((url) => /\/node_modules\/([^/]+)\//.exec(url)?.[1]))], ['qrcode']);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'an incident from the command line: fraud ips lists an address the per-IP lockout holds, fraud unlock-ip lifts it (admin only), reports blocked shows it; a fraud report blocks the user, reports fraud and users list --blocked show it, users unblock lifts it', async () => {
    const tenant = uniqueTenant('cli-incident');
    const ask = (subject: string, body: unknown) => requestJson<Record<string, unknown>>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${platformKey}` } });
    assert.equal((await mfa(['tenants', 'configure', tenant, '--set', 'ipLockout.threshold=5', '--set', 'ipLockout.durationMinutes=30'])).code, 0);
    const idpKey = String((await json(['clients', 'create', tenant, '--name', 'idp', '--scopes', 'challenges,users,reports'])).apiKey);
    const attacker = '203.0.113.92';
    const users = Array.from({ length: 6 }, (_, n) => uniqueUser(`cli-sprayed-${n}`));
    for (const [n, userId] of users.entries()) assert.equal((await ask(Subjects.usersRegister, { tenantId: tenant, userId, phoneNumber: `+1415557${String(3000 + n)}` })).error, undefined);
    for (const userId of users.slice(0, 5)) {
      const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId, method: 'sms', clientIp: attacker });
      assert.equal(start.status, 'pending', JSON.stringify(start));
      await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: '000000' });
    }
    const last = users[5]!;
    await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId: tenant, userId: last, method: 'sms', clientIp: attacker })).reason === 'ip_locked' ? true : undefined), 20_000, 'the address locked');

    // The locked addresses: reports scope reads them, only admin unlocks.
    const locked = JSON.parse((await mfa(['--format', 'json', 'fraud', 'ips', tenant], idpKey)).stdout) as Array<Record<string, unknown>>;
    assert.deepEqual(locked.map((i) => [i.ip, i.failures, i.users, i.dryRun]), [[attacker, 5, 5, false]]);
    assert.match((await mfa(['fraud', 'ips', tenant])).stdout, new RegExp(`^${attacker.replace(/\./g, '\\.')}\\s`, 'm'));
    const notAdmin = await mfa(['fraud', 'unlock-ip', tenant, attacker, '--reason', 'x'], idpKey);
    assert.notEqual(notAdmin.code, 0);
    assert.match(notAdmin.stderr, /forbidden/);
    assert.notEqual((await mfa(['fraud', 'unlock-ip', tenant, attacker])).code, 0, 'a reason is required');
    assert.deepEqual(await json(['fraud', 'unlock-ip', tenant, attacker, '--reason', 'pen test over']), { ip: attacker });
    const twice = await mfa(['fraud', 'unlock-ip', tenant, attacker, '--reason', 'pen test over']);
    assert.notEqual(twice.code, 0);
    assert.match(twice.stderr, /conflict/);
    assert.match((await mfa(['fraud', 'ips', tenant])).stdout, /\(none\)/);
    await eventually(async () => ((await ask(Subjects.challengeStart, { tenantId: tenant, userId: last, method: 'sms', clientIp: attacker })).status === 'pending' ? true : undefined), 20_000, 'the address let in again');
    const history = await eventually(async () => {
      const rows = JSON.parse((await mfa(['--format', 'json', 'reports', 'blocked', tenant, '--ip', attacker], idpKey)).stdout) as Array<Record<string, unknown>>;
      return rows.some((r) => r.action === 'ip_unlock') ? rows : undefined;
    }, 20_000, 'the unlock in the blocked report');
    assert.deepEqual(history.map((r) => r.action), ['ip_unlock', 'ip_lock']);
    assert.equal(history[0]!.reason, 'pen test over');

    // A user reports a sign-in as fraud: denied, the user blocked (fraudAlert.autoBlock, on by default).
    const victim = users[0]!;
    const pending = await ask(Subjects.challengeStart, { tenantId: tenant, userId: victim, method: 'sms', clientIp: '198.51.100.92' });
    assert.equal(pending.status, 'pending', JSON.stringify(pending));
    const reported = await json(['fraud', 'report', tenant, victim, '--challenge', String(pending.challengeId), '--comment', 'not me'], idpKey);
    assert.deepEqual([reported.challengeDenied, reported.blocked], [true, true], JSON.stringify(reported));
    const alerts = await eventually(async () => {
      const rows = JSON.parse((await mfa(['--format', 'json', 'reports', 'fraud', tenant, '--user', victim], idpKey)).stdout) as Array<Record<string, unknown>>;
      return rows.length > 0 ? rows : undefined;
    }, 20_000, 'the fraud alert in the report');
    assert.deepEqual([alerts[0]!.source, alerts[0]!.challengeDenied, alerts[0]!.blocked], ['idp', true, true]);
    assert.ok((await mfa(['reports', 'fraud', tenant], idpKey)).stdout.split('\n').some((line) => line.includes(victim) && /\bidp\b/.test(line)), 'the table names the user and the source');
    const blocked = await eventually(async () => {
      const rows = JSON.parse((await mfa(['--format', 'json', 'users', 'list', tenant, '--blocked'], idpKey)).stdout) as Array<Record<string, unknown>>;
      return rows.length > 0 ? rows : undefined;
    }, 20_000, 'the blocked user listed');
    assert.deepEqual(blocked.map((r) => r.userId), [victim]);
    assert.equal((await json(['users', 'unblock', tenant, victim, '--reason', 'confirmed with the user'])).unblocked, true);
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: victim, method: 'sms', clientIp: '198.51.100.92' })).status, 'pending');
  }, { timeout: 120_000 });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'challenges start sends --request-id and the context the IdP knows (corporate network, RADIUS); reports signins --challenge finds exactly that sign-in', async () => {
    const since = new Date(Date.now() - 1000);
    const tenant = uniqueTenant('cli-ctx');
    await json(['tenants', 'configure', tenant, '--set', 'trustedIps.federatedBypass=true']);
    const userId = uniqueUser('ctx');
    await json(['users', 'register', tenant, userId, '--phone', `+1415555${String(Math.floor(Math.random() * 1e4)).padStart(4, '0')}`]);
    const requestId = `idp-${randomBytes(6).toString('hex')}`;
    // The federated claim, with the tenant's trustedIps.federatedBypass: approved at start.
    const bypassed = await json(['challenges', 'start', tenant, userId, '--inside-corporate-network', '--request-id', requestId, '--ip', '198.51.100.7']);
    assert.deepEqual([bypassed.status, bypassed.reason, bypassed.method], ['approved', 'corporate_network', null]);
    // Without the claim it is a sign-in like any other (totp: the user has none, nothing is sent).
    const plain = await json(['challenges', 'start', tenant, userId, '--method', 'totp']);
    assert.deepEqual([plain.status, plain.reason], ['registration_required', 'method_not_registered']);
    // As the RADIUS front starts it: recorded with its RADIUS client and NAS, via radius.
    const viaRadius = await json(['challenges', 'start', tenant, userId, '--method', 'totp', '--radius-server', 'vpn-1', '--radius-nas', '192.0.2.10', '--radius-password-mode', 'otp']);
    assert.equal(viaRadius.status, 'registration_required');
    assert.match((await mfa(['challenges', 'start', tenant, userId, '--radius-server', 'vpn-1'])).stderr, /--radius-server and --radius-nas go together/);

    const rows = (args: string[]) => mfa(['--format', 'json', 'reports', 'signins', tenant, ...args]).then((r) => JSON.parse(r.stdout) as Array<Record<string, unknown>>);
    await eventually(async () => ((await rows(['--user', userId])).length >= 3 ? true : undefined), 20_000, 'the three sign-ins in the report');
    const one = await rows(['--challenge', String(bypassed.challengeId)]);
    assert.deepEqual(one.map((r) => [r.challengeId, r.userId, r.result, r.resultDetail, r.clientIp, r.via]), [[bypassed.challengeId, userId, 'success', 'MFA requirement satisfied by claim in the token', '198.51.100.7', 'nats']]);
    const radiusRow = await rows(['--challenge', String(viaRadius.challengeId), '--via', 'radius']);
    assert.deepEqual(radiusRow.map((r) => [r.challengeId, r.via, r.serverName, r.serverIp]), [[viaRadius.challengeId, 'radius', 'vpn-1', '192.0.2.10']]);
    assert.deepEqual(await rows(['--challenge', String(plain.challengeId), '--via', 'radius']), []);
    assert.equal((await mfa(['reports', 'signins', tenant, '--challenge', String(plain.challengeId)])).stdout.trim().split('\n').length, 3, 'a table of one row');

    // The correlation id is in the challenge's event; a start without it sends none.
    const events = await eventually(async () => {
      const all = await challengeEvents(tenant, since);
      return all.length >= 3 ? all : undefined;
    }, 15_000, 'the challenge events');
    const eventOf = (id: unknown) => events.find((e) => e.aggregateId === id)!;
    assert.deepEqual([eventOf(bypassed.challengeId).type, (eventOf(bypassed.challengeId).data as { requestId?: string }).requestId], ['ChallengeBypassed', requestId]);
    assert.equal((eventOf(plain.challengeId).data as { requestId?: string }).requestId, undefined);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'challenges start: --remember-device gives a remember token, which skips MFA from MFA_REMEMBER_TOKEN or standard input; --legacy-client follows rememberMfa and app passwords', async () => {
    const tenant = uniqueTenant('cli-remember');
    await json(['tenants', 'configure', tenant, '--set', 'rememberMfa.enabled=true', '--set', 'appPasswords.allowed=true']);
    const userId = uniqueUser('remember');
    await json(['users', 'register', tenant, userId]);
    const enrolled = JSON.parse((await mfa(['--format', 'json', 'users', 'totp-enroll', tenant, userId])).stdout) as Record<string, unknown>;
    const secret = base32Decode(new URL(String(enrolled.otpauthUri)).searchParams.get('secret') ?? '');
    const t0 = Date.now();
    assert.equal((await json(['users', 'totp-activate', tenant, userId, String(enrolled.tokenId), totp(secret, t0)])).active, true);

    const started = await json(['challenges', 'start', tenant, userId, '--method', 'totp', '--remember-device']);
    assert.equal(started.status, 'pending');
    const verified = await json(['challenges', 'verify', tenant, String(started.challengeId), totp(secret, t0 + 30_000)]);
    assert.equal(verified.status, 'approved');
    const token = String(verified.rememberToken ?? '');
    assert.ok(token && verified.rememberUntil, `a remember token: ${JSON.stringify(verified)}`);

    // The token is a bearer secret: from the environment or standard input, never an argument.
    // Only when asked: the variable alone sends nothing.
    const unasked = await mfa(['challenges', 'start', tenant, userId, '--method', 'totp'], platformKey, { MFA_REMEMBER_TOKEN: token });
    assert.equal((JSON.parse(unasked.stdout) as Record<string, unknown>).status, 'pending', unasked.stderr);
    const fromEnv = await mfa(['challenges', 'start', tenant, userId, '--remember-token-env'], platformKey, { MFA_REMEMBER_TOKEN: token });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.deepEqual((({ status, reason }) => [status, reason])(JSON.parse(fromEnv.stdout) as Record<string, unknown>), ['approved', 'remembered_device']);
    const fromStdin = await mfa(['challenges', 'start', tenant, userId, '--remember-token-stdin'], platformKey, {}, `${token}\n`);
    assert.equal(fromStdin.code, 0, fromStdin.stderr);
    assert.deepEqual((({ status, reason }) => [status, reason])(JSON.parse(fromStdin.stdout) as Record<string, unknown>), ['approved', 'remembered_device']);
    const forged = await mfa(['challenges', 'start', tenant, userId, '--method', 'totp', '--remember-token-stdin'], platformKey, {}, `${token.slice(0, -2)}xx\n`);
    assert.equal((JSON.parse(forged.stdout) as Record<string, unknown>).status, 'pending', forged.stderr);
    const empty = await mfa(['challenges', 'start', tenant, userId, '--remember-token-stdin'], platformKey, {}, '');
    assert.deepEqual([empty.code, /standard input is empty/.test(empty.stderr)], [1, true], empty.stderr);

    // A legacy client of a user who completed MFA within rememberMfa.days: approved; once the user
    // has an app password, it must use it.
    const legacy = await json(['challenges', 'start', tenant, userId, '--legacy-client']);
    assert.deepEqual([legacy.status, legacy.reason], ['approved', 'remembered_device']);
    assert.ok((await json(['apppasswords', 'create', tenant, userId, '--name', 'Outlook 2010'])).password);
    const refused = await json(['challenges', 'start', tenant, userId, '--legacy-client']);
    assert.deepEqual([refused.status, refused.reason], ['denied', 'app_password_required']);
    assert.equal((await json(['challenges', 'start', tenant, userId, '--method', 'totp'])).status, 'pending', 'a browser start is not concerned');
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'reports audit --operator lists what one console operator did, --subject every action of one subject; both together narrow further; a wildcard subject is refused', async () => {
    const tenant = uniqueTenant('cli-audit');
    const userId = uniqueUser('audited');
    // As the console asks: the platform key, naming the operator (only that key may).
    const asOperator = async (subject: string, body: Record<string, unknown>, operator: { sub: string; name: string }) => {
      const reply = await requestJson<{ error?: unknown }>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${platformKey}`, [Headers.operator]: JSON.stringify(operator) } });
      assert.equal(reply.error, undefined, JSON.stringify(reply.error));
    };
    const olga = { sub: 'olga-cli', name: 'Olga Operator' };
    await asOperator(Subjects.tenantsConfigure, { tenantId: tenant, settings: {} }, olga);
    await asOperator(Subjects.usersRegister, { tenantId: tenant, userId, phoneNumber: '+14155550199' }, { sub: 'ivan-cli', name: 'Ivan' });
    await asOperator(Subjects.usersBlock, { tenantId: tenant, userId, reason: 'phone stolen' }, olga);
    // The platform key alone (this command line): the trail names no operator.
    assert.equal((await mfa(['users', 'unblock', tenant, userId, '--reason', 'found it'])).code, 0);
    assert.equal((await mfa(['users', 'block', tenant, userId, '--reason', 'again'])).code, 0);
    const audit = async (...args: string[]) => (await json(['--format', 'json', 'reports', 'audit', tenant, '--all', ...args])) as unknown as Array<{ subject: string; operator?: { sub: string }; clientId: string }>;
    const rows = await eventually(async () => {
      const all = await audit();
      return all.length >= 5 ? all : undefined;
    }, 20_000, 'five actions in the trail');
    assert.equal(rows.length, 5);
    assert.deepEqual((await audit('--operator', 'olga-cli')).map((r) => [r.operator?.sub, r.subject]), [['olga-cli', Subjects.usersBlock], ['olga-cli', Subjects.tenantsConfigure]]);
    assert.deepEqual((await audit('--subject', Subjects.usersBlock)).map((r) => r.operator?.sub ?? r.clientId), ['platform', 'olga-cli']);
    assert.deepEqual((await audit('--subject', Subjects.usersBlock, '--operator', 'olga-cli')).length, 1);
    assert.deepEqual(await audit('--operator', 'Olga Operator'), [], 'the sub, not the name');
    const table = await mfa(['reports', 'audit', tenant, '--operator', 'ivan-cli']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /"sub":"ivan-cli"/);
    assert.match(table.stdout, /mfa\.v1\.users\.register/);
    const wildcard = await mfa(['reports', 'audit', tenant, '--subject', 'mfa.v1.users.*']);
    assert.deepEqual([wildcard.code, /invalid_request: .*subject/.test(wildcard.stderr)], [1, true], wildcard.stderr);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'tenants delete: refused without --yes and with the tenant’s own key; --wait follows the offboarding on standard error to deleted and prints what was erased; sent again it only reports', async () => {
    const tenant = uniqueTenant('cli-offboard');
    await json(['tenants', 'configure', tenant]);
    const userId = uniqueUser('leaver');
    await json(['users', 'register', tenant, userId, '--phone', '+14155550151']);
    const key = String((await json(['clients', 'create', tenant, '--name', 'idp', '--scopes', 'admin,users'])).apiKey);
    const unconfirmed = await mfa(['tenants', 'delete', tenant]);
    assert.deepEqual([unconfirmed.code, /--yes/.test(unconfirmed.stderr)], [1, true], unconfirmed.stderr);
    const badTimeout = await mfa(['tenants', 'delete', tenant, '--yes', '--wait', '--wait-timeout', 'soon']);
    assert.deepEqual([badTimeout.code, /--wait-timeout soon: expected a number of seconds/.test(badTimeout.stderr)], [1, true], badTimeout.stderr);
    const ownKey = await mfa(['tenants', 'delete', tenant, '--yes'], key);
    assert.deepEqual([ownKey.code, /forbidden/.test(ownKey.stderr)], [1, true], ownKey.stderr);
    // Nothing of that deleted anything.
    assert.equal((await json(['users', 'get', tenant, userId])).userId, userId);

    const waited = await mfa(['tenants', 'delete', tenant, '--yes', '--wait', '--wait-timeout', '45']);
    assert.equal(waited.code, 0, waited.stderr);
    const done = JSON.parse(waited.stdout) as { tenantId: string; state: string; deletedAt: string; erasedAt?: string; erased?: Record<string, number> };
    assert.deepEqual([done.tenantId, done.state, done.erased], [tenant, 'deleted', { users: 1, hardwareTokens: 0, recordings: 0, clients: 1 }]);
    assert.ok(done.erasedAt, 'when it was done');
    const progress = waited.stderr.trim().split('\n');
    assert.equal(progress.at(-1), `${tenant}: deleted (users 1, hardware tokens 0, recordings 0, API keys 1)`, waited.stderr);
    assert.ok(progress.slice(0, -1).every((line) => line.startsWith(`${tenant}: deleting since ${done.deletedAt}`)), waited.stderr);
    // Sent again: the same deletion reported, nothing more.
    assert.deepEqual(await json(['tenants', 'delete', tenant, '--yes']), done);
    const gone = await mfa(['tenants', 'get', tenant]);
    assert.deepEqual([gone.code, /not_found/.test(gone.stderr)], [1, true], gone.stderr);
    assert.deepEqual([(await mfa(['users', 'get', tenant, userId], key)).code], [1]);
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'says clearly what is wrong, with exit code 1', async () => {
    const unknown = await mfa(['tenants', 'get', uniqueTenant('none')]);
    assert.deepEqual([unknown.code, /not_found/.test(unknown.stderr)], [1, true]);
    const badSet = await mfa(['tenants', 'configure', tenantId, '--set', 'novalue']);
    assert.deepEqual([badSet.code, /expected path=value/.test(badSet.stderr)], [1, true]);
    const refused = await mfa(['tenants', 'configure', tenantId, '--set', 'maxAttempts=99']);
    assert.deepEqual([refused.code, /invalid_request: .*maxAttempts/.test(refused.stderr)], [1, true]);
    const missing = await mfa(['users', 'block', tenantId, 'someone']);
    assert.deepEqual([missing.code, /--reason/.test(missing.stderr)], [1, true]);
    const badChoice = await mfa(['challenges', 'start', tenantId, 'someone', '--method', 'carrier-pigeon']);
    assert.equal(badChoice.code, 1);
    // A challenge id may begin with '-' (base64url): an argument, not an unknown option; a
    // mistyped option is still refused.
    const dashed = await mfa(['challenges', 'status', tenantId, `-${'A'.repeat(21)}.${'B'.repeat(22)}`]);
    assert.deepEqual([dashed.code, /not_found/.test(dashed.stderr), /unknown option/.test(dashed.stderr)], [1, true, false], dashed.stderr);
    const typo = await mfa(['challenges', 'status', tenantId, `${'A'.repeat(22)}.${'B'.repeat(22)}`, '--jsn']);
    assert.deepEqual([typo.code, /too many arguments/.test(typo.stderr)], [1, true], typo.stderr);
    const noKey = await mfa(['tenants', 'get', tenantId], '');
    assert.deepEqual([noKey.code, /forbidden/.test(noKey.stderr)], [1, true]);
    const noServer = await run(process.execPath, [MFA, '--nats-url', 'nats://operator:S3cretPass@127.0.0.1:1', '--timeout', '2000', 'tenants', 'get', tenantId]).catch((e: { code: number; stderr: string }) => e);
    assert.equal((noServer as { code: number }).code, 1);
    assert.match((noServer as { stderr: string }).stderr, /cannot connect to NATS at nats:\/\/\*\*\*@127\.0\.0\.1:1/);
    assert.ok(!(noServer as { stderr: string }).stderr.includes('S3cretPass'), 'the URL\'s password is never printed');
    // An app password comes from standard input (or MFA_APP_PASSWORD), never from an argument.
    // (The request is sent: this tenant allows none, which the service answers.)
    const checked = await mfa(['apppasswords', 'verify', tenantId, uniqueUser('nobody')], platformKey, {}, 'not-a-password\n');
    assert.deepEqual([checked.code, /forbidden: app passwords are not allowed/.test(checked.stderr)], [1, true], checked.stderr);
    assert.equal((await mfa(['apppasswords', 'verify', tenantId, 'someone', 'in-the-clear'])).code, 1);
    // RADIUS: a port out of range or a host that does not resolve is an error (exit 1), not a crash.
    for (const server of ['127.0.0.1:99999', 'nosuchhost.invalid:1812']) {
      const failed = await mfa(['radius', 'status', server, '--wait', '2'], platformKey, { RADIUS_SECRET: 'a-secret-of-some-length' });
      assert.deepEqual([failed.code, /ERR_SOCKET|    at /.test(failed.stderr)], [1, false], failed.stderr);
    }
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'radius signin: an Access-Challenge with standard input closed ends with exit code 1', async () => {
    const secret = Buffer.from('a-secret-of-some-length');
    const server = createSocket('udp4');
    server.on('message', (datagram, from) => {
      const request = decodePacket(datagram);
      const answer = encodeResponse({
        code: Code.AccessChallenge,
        identifier: request.identifier,
        requestAuthenticator: request.authenticator,
        attributes: [{ type: Attr.ReplyMessage, value: Buffer.from('Enter the code') }, { type: Attr.State, value: randomBytes(16) }],
        secret,
      });
      server.send(answer, from.port, from.address);
    });
    await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address();
      const signin = await mfa(['radius', 'signin', `127.0.0.1:${port}`, 'alice@contoso.example', '--wait', '3'], platformKey, { RADIUS_SECRET: secret.toString() }, '');
      assert.equal(signin.code, 1, signin.stdout + signin.stderr);
      assert.match(signin.stdout, /Access-Challenge: Enter the code/);
      assert.match(signin.stderr, /no code/);
    } finally {
      server.close();
    }
  });
  itWith({ real: ['nats', 'redis', 'postgres'] }, 'hardware tokens: imports a file too large for one request through the object store and follows the job, writes the refused rows, lists, assigns and activates; a PSKC key comes from standard input', async () => {
    const tenant = uniqueTenant('cli-oath');
    await json(['tenants', 'configure', tenant]);
    const holder = uniqueUser('fob');
    await json(['users', 'register', tenant, holder]);
    const [keyed, spare] = [randomBytes(20), randomBytes(20)];
    const folder = mkdtempSync(join(tmpdir(), 'mfa-cli-oath-'));
    // Three rows, then blank lines (the parser skips them) past what one request may carry.
    const csv = `${[
      OATH_CSV_HEADER,
      `${holder},CLI-1,${base32Encode(keyed)},30,Contoso,Key`,
      `,CLI-2,${base32Encode(spare)},60,Contoso,Card`,
      `${holder},CLI-3,1234567abcdef1234567abcdef,30,Contoso,Key`,
    ].join('\r\n')}${'\r\n'.repeat(600_000)}`;
    assert.ok(csv.length > MAX_IMPORT_REQUEST_BYTES);
    writeFileSync(join(folder, 'tokens.csv'), csv);
    const importErrors = join(folder, 'import-errors.csv');
    const imported = await mfa(['oath', 'import', tenant, join(folder, 'tokens.csv'), '--wait', '--errors', importErrors]);
    assert.equal(imported.code, 1, `a refused row is exit code 1: ${imported.stderr}`);
    const status = JSON.parse(imported.stdout) as Record<string, unknown>;
    assert.deepEqual([status.state, status.format, status.total, status.processed, status.imported, status.failed], ['completed', 'csv', 3, 3, 2, 1]);
    assert.equal(status.errorsCsv, undefined, 'the summary leaves the rows to --errors');
    assert.match(imported.stderr, /^completed: 3 of 3 tokens \(2 imported, 1 refused\)$/m);
    assert.match(imported.stderr, /1 refused row\(s\) written to .*import-errors\.csv/);
    // The whole error file, from the object store (as the import wrote it too).
    const errorsFile = join(folder, 'errors.csv');
    const written = await mfa(['oath', 'status', tenant, String(status.jobId), '--errors', errorsFile]);
    assert.equal(written.code, 0, written.stderr);
    const errors = readFileSync(errorsFile, 'utf8').trim().split(/\r?\n/);
    assert.equal(errors[0], OATH_ERRORS_CSV_HEADER);
    assert.match(errors[1]!, /^3,[^,]+,CLI-3,.*secret key/i);
    assert.equal(errors.length, 2);
    assert.equal(readFileSync(importErrors, 'utf8'), readFileSync(errorsFile, 'utf8'));
    assert.equal((JSON.parse((await mfa(['oath', 'status', tenant, String(status.jobId)])).stdout) as Record<string, unknown>).errorsObject, status.errorsObject);

    // The inventory: the unassigned one, assigned to the user; the other activated with the code it shows.
    const unassigned = await mfa(['oath', 'tokens', 'list', tenant, '--state', 'unassigned']);
    assert.match(unassigned.stdout, /^serialNumber\s+state\s+userId\s+manufacturer\s+model\s+algorithm\s+digits\s+period\s+importedAt\s+activatedAt$/m);
    assert.match(unassigned.stdout, /^CLI-2\s+unassigned\s+Contoso\s+Card\s+SHA1\s+6\s+60\s+\d{4}-/m);
    assert.equal(unassigned.stdout.trim().split('\n').length, 3);
    const assigned = await json(['oath', 'tokens', 'assign', tenant, 'CLI-2', holder]);
    assert.deepEqual([assigned.serialNumber, assigned.state, assigned.userId], ['CLI-2', 'assigned', holder]);
    const wrong = await mfa(['oath', 'tokens', 'activate', tenant, 'CLI-1', totp(keyed, Date.now()) === '000000' ? '111111' : '000000']);
    assert.deepEqual([wrong.code, (JSON.parse(wrong.stdout) as Record<string, unknown>).active], [1, false]);
    assert.equal((await json(['oath', 'tokens', 'activate', tenant, 'CLI-1', totp(keyed, Date.now())])).active, true);
    const all = JSON.parse((await mfa(['--format', 'json', 'oath', 'tokens', 'list', tenant])).stdout) as OathTokenItem[];
    assert.deepEqual(all.map((t) => [t.serialNumber, t.state, t.userId]).sort(), [['CLI-1', 'active', holder], ['CLI-2', 'assigned', holder]]);
    // A page at a time: the next page's cursor on standard error.
    const first = await mfa(['--format', 'json', 'oath', 'tokens', 'list', tenant, '--limit', '1']);
    const cursor = /^more: --cursor (\S+)$/m.exec(first.stderr)?.[1];
    assert.ok(cursor, first.stderr);
    const second = await mfa(['--format', 'json', 'oath', 'tokens', 'list', tenant, '--limit', '1', '--cursor', cursor]);
    assert.deepEqual([...(JSON.parse(first.stdout) as OathTokenItem[]), ...(JSON.parse(second.stdout) as OathTokenItem[])].map((t) => t.serialNumber).sort(), ['CLI-1', 'CLI-2']);
    assert.doesNotMatch(second.stderr, /more:/);

    // An encrypted PSKC file (small: inline): without its key the job fails and says why; the key from standard input.
    const psk = randomBytes(16);
    writeFileSync(join(folder, 'vendor.xml'), pskPskc('CLI-P', randomBytes(20), psk));
    const keyless = await mfa(['oath', 'import', tenant, join(folder, 'vendor.xml'), '--wait']);
    assert.equal(keyless.code, 1);
    assert.equal((JSON.parse(keyless.stdout) as Record<string, unknown>).state, 'failed');
    assert.match(keyless.stderr, /the import failed: the file's keys are encrypted with a pre-shared key/);
    assert.match((await mfa(['oath', 'status', tenant, String((JSON.parse(keyless.stdout) as Record<string, unknown>).jobId), '--errors', join(folder, 'none.csv')])).stderr, /no row was refused: no error file/);
    const keyedImport = await mfa(['oath', 'import', tenant, join(folder, 'vendor.xml'), '--psk-hex-stdin', '--wait'], platformKey, {}, `${psk.toString('hex')}\n`);
    assert.equal(keyedImport.code, 0, keyedImport.stderr);
    assert.deepEqual((({ state, format, imported, failed }) => [state, format, imported, failed])(JSON.parse(keyedImport.stdout) as Record<string, unknown>), ['completed', 'pskc', 1, 0]);
    assert.ok(!`${keyedImport.stdout}${keyedImport.stderr}`.includes(psk.toString('hex')), 'the key is never printed');
    // Refused before anything is sent: a format the name does not tell, a key for a CSV file.
    assert.match((await mfa(['oath', 'import', tenant, join(folder, 'errors.txt')])).stderr, /give --file-format csv or --file-format pskc/);
    assert.match((await mfa(['oath', 'import', tenant, join(folder, 'tokens.csv')], platformKey, { MFA_PSKC_PASSWORD: 'secret' })).stderr, /only for PSKC files/);
    assert.match((await mfa(['oath', 'tokens', 'list', tenant], (await json(['clients', 'create', tenant, '--name', 'idp', '--scopes', 'challenges,users'])).apiKey as string)).stderr, /forbidden/, 'hardware tokens are admin');
  }, { timeout: 120_000 });
});
