import { Command, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  IMPORTS_BUCKET,
  MAX_IMPORT_FILE_BYTES,
  MAX_IMPORT_REQUEST_BYTES,
  MAX_VOICE_MESSAGE_BYTES,
  USAGE_METHODS,
  usageByMethod,
  OATH_TOKEN_STATES,
  Subjects,
  VoiceMessageBuckets,
  type OathImportStatusReply,
  type OathTokensActivateReply,
  type OathTokensListReply,
  type TenantsDeleteReply,
  type TotpActivateReply,
  type TotpEnrollReply,
  type UsersGetReply,
  UsersListMethod,
} from '@mfa/contracts';
import { createInterface } from 'node:readline/promises';
import { Api, CliError } from './api.js';
import { Attr, Code } from '@mfa/radius/packet';
import { parseServer, radiusRequest, type RadiusAnswer, type RadiusTarget } from './radius.js';
import { render, type Format } from './output.js';

/** The terminal QR code of an enrolment: its library is loaded only by the commands that print one. */
async function qrCode(text: string, options: { type: 'terminal'; small: boolean }): Promise<string> {
  const { default: QRCode } = await import('qrcode');
  return QRCode.toString(text, options);
}

/**
 * `mfa`: the public NATS API from a terminal, for operators (tenants, API clients, users, app
 * passwords, fraud, reports, voice recordings, hardware tokens) and for integrators (challenges:
 * what an IdP sends; radius: what a VPN asks the RADIUS front). Every command but radius is one or
 * more requests of the contract (docs/api.md); nothing here reaches past it.
 */
const program = new Command()
  .name('mfa')
  .description(
    'Open MFA from the command line over the NATS API: tenants, clients (API keys), users, apppasswords (app passwords), challenges (what an IdP sends), fraud (alerts and per-IP locks), reports, voice-messages (call recordings) and oath (hardware tokens); radius asks the RADIUS front as a VPN does',
  )
  .option('--nats-url <url>', 'NATS server(s), comma-separated (default: NATS_URL or nats://127.0.0.1:4222; NATS_* credentials as the services read them)')
  .option('--api-key <key>', 'an API key of the tenant, or the platform key (default: MFA_API_KEY); not needed when the stack runs with MFA_AUTH=off')
  .addOption(new Option('--format <format>', 'output of reports and lists').choices(['table', 'json', 'csv']).default('table'))
  .option('--timeout <ms>', 'how long to wait for each answer', '10000')
  .showHelpAfterError('(mfa <command> --help for its options)');

interface Globals {
  natsUrl?: string;
  apiKey?: string;
  format: Format;
  timeout: string;
}

/** Runs one command against the API and prints what it returns; contract errors become exit code 1. */
async function withApi(work: (api: Api, globals: Globals) => Promise<void>): Promise<void> {
  const globals = program.opts<Globals>();
  const api = await Api.connect({
    ...(globals.natsUrl ? { natsUrl: globals.natsUrl } : {}),
    ...((globals.apiKey ?? process.env.MFA_API_KEY) ? { apiKey: globals.apiKey ?? process.env.MFA_API_KEY } : {}),
    timeoutMs: Number(globals.timeout) || 10_000,
  });
  try {
    await work(api, globals);
  } finally {
    await api.close();
  }
}

const print = (value: unknown): void => {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
};
/** An argument as the shell reads it back: as it is when plain, else in single quotes (zsh expands a leading `=`). */
const shellWord = (value: string): string => (/^[\w@%+:,./-][\w@%+=:,./-]*$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`);
/** Arguments after the options: `--` first when one starts with `-`, which would read as an option. */
const shellArgs = (values: readonly string[]): string => `${values.some((v) => v.startsWith('-')) ? '-- ' : ''}${values.map(shellWord).join(' ')}`;
const list = (value: string) => value.split(',').map((v) => v.trim()).filter(Boolean);
const collect = (value: string, previous: string[] = []) => [...previous, value];

/** `path=value` pairs as a settings patch; a value that reads as JSON (5, true, ["totp"]) is taken as such. */
export function patchFromPairs(pairs: readonly string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new CliError(`--set ${pair}: expected path=value, e.g. lockout.threshold=5`, 'invalid_request');
    const path = pair.slice(0, at).split('.');
    const raw = pair.slice(at + 1);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // plain text
    }
    let target = patch;
    for (const key of path.slice(0, -1)) target = (target[key] ??= {}) as Record<string, unknown>;
    target[path.at(-1)!] = value;
  }
  return patch;
}

/**
 * Every page of a report (--all), or one: the first, or the one `start` (--cursor) names.
 * `next`: the cursor of the page after the last one read, when there is one (never with --all).
 */
async function paged<T extends { items: Array<Record<string, unknown>>; nextCursor?: string }>(
  api: Api,
  subject: string,
  body: Record<string, unknown>,
  all: boolean,
  start?: string,
): Promise<{ items: Array<Record<string, unknown>>; next: string | undefined }> {
  const items: Array<Record<string, unknown>> = [];
  let cursor = start;
  let next: string | undefined;
  do {
    const reply = await api.call<T>(subject, { ...body, ...(cursor ? { cursor } : {}) });
    items.push(...reply.items);
    next = reply.nextCursor;
    cursor = all ? next : undefined;
  } while (cursor);
  return { items, next };
}
/**
 * Every page of a list (--all), or one (the first, or --cursor's). A page left out is never
 * silent: its --cursor goes to standard error, as `oath tokens list` prints it.
 */
const pages = async <T extends { items: Array<Record<string, unknown>>; nextCursor?: string }>(api: Api, subject: string, body: Record<string, unknown>, o: { all?: unknown; cursor?: unknown }) => {
  const { items, next } = await paged<T>(api, subject, body, Boolean(o.all), typeof o.cursor === 'string' ? o.cursor : undefined);
  if (next) process.stderr.write(`more: --cursor ${next}\n`);
  return items;
};
/** The options of a listing that comes a page at a time. */
const paging = (c: Command) => c.option('--all', 'every page, not only the first').option('--cursor <cursor>', 'the page after the one that printed it (on standard error)');

// ---- tenants -----------------------------------------------------------------------------------
const tenants = program.command('tenants').description('tenant settings (admin scope); offboarding (platform key)');
tenants
  .command('get <tenant>')
  .description('print every setting of the tenant')
  .action((tenantId: string) => withApi(async (api) => print(await api.call(Subjects.tenantsGet, { tenantId }))));
tenants
  .command('configure <tenant>')
  .description('change settings (only those given), creating the tenant with the platform key')
  .option('--set <path=value>', 'a setting, e.g. --set lockout.threshold=5 --set enabledMethods=\'["totp","sms"]\' (repeatable)', collect, [])
  .option('--json <patch>', 'the settings patch as JSON, e.g. \'{"maxAttempts":3}\'')
  .action((tenantId: string, o: { set: string[]; json?: string }) =>
    withApi(async (api) => {
      let settings: Record<string, unknown> = patchFromPairs(o.set);
      if (o.json) {
        try {
          settings = { ...settings, ...(JSON.parse(o.json) as Record<string, unknown>) };
        } catch {
          throw new CliError('--json: not valid JSON', 'invalid_request');
        }
      }
      print(await api.call(Subjects.tenantsConfigure, { tenantId, settings }));
    }),
  );
/** How often `tenants delete --wait` asks again. */
const DELETION_POLL_MS = 2000;
/** One line of a deletion's progress (standard error). */
const deletionLine = (reply: TenantsDeleteReply, waitedMs: number): string =>
  reply.state === 'deleted'
    ? `${reply.tenantId}: deleted${reply.erased ? ` (users ${reply.erased.users}, hardware tokens ${reply.erased.hardwareTokens}, recordings ${reply.erased.recordings}, API keys ${reply.erased.clients})` : ''}`
    : `${reply.tenantId}: deleting since ${reply.deletedAt}, waited ${Math.round(waitedMs / 1000)} s`;
tenants
  .command('delete <tenant>')
  .description(
    'offboard the tenant (platform key only): from the first answer it is unknown to every request and its API keys are revoked; its users are then erased and its hardware tokens, recordings and import files deleted in the background. Sent again, it prints where that stands: deleting, then deleted with what was erased',
  )
  .requiredOption('--yes', 'confirm: this cannot be undone')
  .option('--wait', 'ask again every 2 s until the tenant is deleted, the progress on standard error, then print the last answer')
  .option('--wait-timeout <seconds>', 'with --wait: give up after this long (exit code 1; the deletion goes on)', '600')
  .action((tenantId: string, o: { wait?: boolean; waitTimeout: string }) =>
    withApi(async (api) => {
      const limitMs = Number(o.waitTimeout) * 1000;
      if (o.wait && !(limitMs > 0)) throw new CliError(`--wait-timeout ${o.waitTimeout}: expected a number of seconds`, 'invalid_request');
      let reply = await api.call<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId });
      if (o.wait) {
        const tty = process.stderr.isTTY === true;
        const started = Date.now();
        for (;;) {
          const line = deletionLine(reply, Date.now() - started);
          const done = reply.state === 'deleted';
          process.stderr.write(tty ? `\r\x1b[K${line}${done ? '\n' : ''}` : `${line}\n`);
          if (done) break;
          if (Date.now() - started >= limitMs) {
            if (tty) process.stderr.write('\n');
            print(reply);
            throw new CliError(`${tenantId} is still being deleted after ${o.waitTimeout} s (the deletion goes on): run the command again to follow it`, 'unavailable');
          }
          await new Promise((resolve) => setTimeout(resolve, DELETION_POLL_MS));
          // Asked again only while the tenant is still unknown: an id created again meanwhile (once
          // deleted, the platform key may) is a new tenant, which this command must not delete.
          const live = await api.call(Subjects.tenantsGet, { tenantId }).then(
            () => true,
            (error: unknown) => {
              if (error instanceof CliError && error.code === 'not_found') return false;
              throw error;
            },
          );
          if (live) throw new CliError(`${tenantId} exists again (created since the deletion ended): not deleted again; nothing was changed`, 'conflict');
          reply = await api.call<TenantsDeleteReply>(Subjects.tenantsDelete, { tenantId });
        }
      }
      print(reply);
    }),
  );

// ---- clients -----------------------------------------------------------------------------------
const clients = program.command('clients').description('API keys of a tenant (admin scope)');
clients
  .command('create <tenant>')
  .description('create an API key; it is printed once')
  .requiredOption('--name <name>', 'what the key is for')
  .requiredOption('--scopes <scopes>', 'comma-separated: challenges, users, reports, admin', list)
  .action((tenantId: string, o: { name: string; scopes: string[] }) => withApi(async (api) => print(await api.call(Subjects.clientsCreate, { tenantId, name: o.name, scopes: o.scopes }))));
clients
  .command('list <tenant>')
  .description('the tenant\'s API clients')
  .action((tenantId: string) =>
    withApi(async (api, g) => {
      const reply = await api.call<{ items: Array<Record<string, unknown>> }>(Subjects.clientsList, { tenantId });
      process.stdout.write(render(reply.items, ['clientId', 'name', 'scopes', 'createdAt', 'lastUsedAt', 'revokedAt'], g.format));
    }),
  );
clients
  .command('revoke <tenant> <clientId>')
  .description('revoke an API key at once')
  .action((tenantId: string, clientId: string) => withApi(async (api) => print(await api.call(Subjects.clientsRevoke, { tenantId, clientId }))));

// ---- users -------------------------------------------------------------------------------------
const users = program.command('users').description('users of a tenant');
users
  .command('get <tenant> <user>')
  .description('profile, methods, tokens and block')
  .action((tenantId: string, userId: string) => withApi(async (api) => print(await api.call(Subjects.usersGet, { tenantId, userId }))));
paging(
  users
    .command('list <tenant>')
    .description('find users by the start of their id, name or phone number, or list them all')
    .option('--query <prefix>', 'the start of a user id, display name or phone number')
    .option('--blocked', 'only users blocked now')
    .addOption(new Option('--not-blocked', 'only users not blocked now').conflicts('blocked'))
    .addOption(new Option('--method <method>', 'only users who have this method now, or none: users who must register before MFA').choices(UsersListMethod.options))
    .option('--limit <n>', 'users per page (1–500)', '500'),
).action((tenantId: string, o: { query?: string; blocked?: boolean; notBlocked?: boolean; method?: string; limit: string; all?: boolean; cursor?: string }) =>
    withApi(async (api, g) => {
      const blocked = o.blocked ? { blocked: true } : o.notBlocked ? { blocked: false } : {};
      const rows = await pages(api, Subjects.usersList, { tenantId, limit: Number(o.limit) || 500, ...(o.query ? { query: o.query } : {}), ...blocked, ...(o.method ? { method: o.method } : {}) }, o);
      process.stdout.write(render(rows, ['userId', 'displayName', 'methods', 'blocked'], g.format));
    }),
  );
users
  .command('register <tenant> <user>')
  .description('create or update a user')
  .option('--name <displayName>')
  .option('--email <email>')
  .option('--phone <e164>', 'phone number in E.164, e.g. +14155550100')
  .option('--extension <digits>', 'the phone\'s extension (an office phone): calls dial it')
  .option('--language <tag>', 'e.g. sv-SE')
  .action((tenantId: string, userId: string, o: { name?: string; email?: string; phone?: string; extension?: string; language?: string }) =>
    withApi(async (api) =>
      print(
        await api.call(Subjects.usersRegister, {
          tenantId,
          userId,
          ...(o.name ? { displayName: o.name } : {}),
          ...(o.email ? { email: o.email } : {}),
          ...(o.phone ? { phoneNumber: o.phone } : {}),
          ...(o.extension ? { phoneExtension: o.extension } : {}),
          ...(o.language ? { language: o.language } : {}),
        }),
      ),
    ),
  );
users
  .command('block <tenant> <user>')
  .description('block for 90 days (admin scope)')
  .requiredOption('--reason <reason>', 'why (kept in the blocked-user history)')
  .action((tenantId: string, userId: string, o: { reason: string }) => withApi(async (api) => print(await api.call(Subjects.usersBlock, { tenantId, userId, reason: o.reason }))));
users
  .command('unblock <tenant> <user>')
  .description('lift a block and code lockouts (admin scope)')
  .requiredOption('--reason <reason>', 'why (kept in the blocked-user history)')
  .action((tenantId: string, userId: string, o: { reason: string }) => withApi(async (api) => print(await api.call(Subjects.usersUnblock, { tenantId, userId, reason: o.reason }))));
users
  .command('reset <tenant> <user>')
  .description(
    'clear every method of the user: TOTP tokens (hardware ones go back to the inventory), phone number, authenticator apps and unused activation codes, app passwords, voice PIN, remembered browsers; name, e-mail and language stay. They must register again (admin scope)',
  )
  .action((tenantId: string, userId: string) => withApi(async (api) => print(await api.call(Subjects.usersReset, { tenantId, userId }))));
users
  .command('default-method <tenant> <user> <method>')
  .description('the method a sign-in without one uses (one the user has registered)')
  .action((tenantId: string, userId: string, method: string) => withApi(async (api) => print(await api.call(Subjects.usersMethodsDefault, { tenantId, userId, method }))));
users
  .command('forget-browsers <tenant> <user>')
  .description('forget remembered browsers (rememberMfa): one with --id, else all')
  .option('--id <rememberId>', 'one browser, as users get lists it')
  .action((tenantId: string, userId: string, o: { id?: string }) => withApi(async (api) => print(await api.call(Subjects.usersRememberedRevoke, { tenantId, userId, ...(o.id ? { rememberId: o.id } : {}) }))));
users
  .command('delete-token <tenant> <user> <tokenId>')
  .description('remove one of the user\'s tokens')
  .action((tenantId: string, userId: string, tokenId: string) => withApi(async (api) => print(await api.call(Subjects.usersTokensDelete, { tenantId, userId, tokenId }))));
users
  .command('set-pin <tenant> <user>')
  .description('the PIN of voice PIN mode (4–8 digits), from MFA_PIN or else standard input, so it stays out of the shell history')
  .action((tenantId: string, userId: string) =>
    withApi(async (api) => {
      let pin = process.env.MFA_PIN;
      if (pin === undefined) {
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        pin = Buffer.concat(chunks).toString('utf8');
      }
      pin = pin.trim();
      print(await api.call(Subjects.usersPinSet, { tenantId, userId, pin }));
    }),
  );
users
  .command('totp-enroll <tenant> <user>')
  .description('add an authenticator app (TOTP): prints the pending token\'s id and its otpauth:// URI, as a QR code to scan from the terminal; activate it within 10 minutes with totp-activate')
  .option('--label <name>', 'the account name the app shows (default: the user id)')
  .option('--json', 'print the reply as JSON (as does --format json)')
  .action((tenantId: string, userId: string, o: { label?: string; json?: boolean }) =>
    withApi(async (api, g) => {
      const reply = await api.call<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId, ...(o.label !== undefined ? { label: o.label } : {}) });
      // The secret is in the URI (what the app scans): it is not printed a second time.
      const { secret: _secret, ...shown } = reply;
      if (o.json || g.format === 'json') print(shown);
      else {
        process.stdout.write(`${await qrCode(reply.otpauthUri, { type: 'terminal', small: true })}\n`);
        process.stdout.write(`token id     ${reply.tokenId}\notpauth URI  ${reply.otpauthUri}\npending: ${reply.digits} digits every ${reply.period} s (${reply.algorithm}); activate within 10 minutes\n`);
      }
      process.stderr.write(`next: mfa users totp-activate ${shellArgs([tenantId, userId, reply.tokenId])} <code>\n`);
    }),
  );
users
  .command('totp-activate <tenant> <user> <tokenId> <code>')
  .description('activate a pending TOTP token (totp-enroll) with the code the app shows now; exit code 1 when the code is not right')
  .action((tenantId: string, userId: string, tokenId: string, code: string) =>
    withApi(async (api) => {
      const reply = await api.call<TotpActivateReply>(Subjects.totpActivate, { tenantId, userId, tokenId, code });
      print(reply);
      if (!reply.active) {
        process.stderr.write(`mfa: not the code the app shows now; nothing changed (try the next one: five codes per enrollment)\n`);
        process.exitCode = 1;
      }
    }),
  );
users
  .command('push-enroll <tenant> <user>')
  .description('a one-time activation code for the user\'s authenticator app (10 minutes), with its URL as a QR code to scan from the terminal')
  .option('--json', 'print the reply as JSON (the QR code as a PNG data URL)')
  .action((tenantId: string, userId: string, options: { json?: boolean }) =>
    withApi(async (api) => {
      const reply = await api.call<{ activationCode: string; activationUrl: string; expiresAt: string; qrCode: string }>(Subjects.usersPushEnroll, { tenantId, userId });
      if (options.json) return print(reply);
      process.stdout.write(`${await qrCode(reply.activationUrl, { type: 'terminal', small: true })}\n`);
      process.stdout.write(`activation code  ${reply.activationCode}\nactivation URL   ${reply.activationUrl}\ngood once, until ${reply.expiresAt}\n`);
    }),
  );
users
  .command('delete-device <tenant> <user> <deviceId>')
  .description('revoke one of the user\'s authenticator apps (users get lists them)')
  .action((tenantId: string, userId: string, deviceId: string) => withApi(async (api) => print(await api.call(Subjects.usersDevicesDelete, { tenantId, userId, deviceId }))));
users
  .command('delete <tenant> <user>')
  .description('erase the user: personal data becomes unreadable everywhere (admin scope)')
  .requiredOption('--yes', 'confirm: this cannot be undone')
  .option('--only-if-key-erased <generation>', "only complete an erasure the key store made at this data key generation (after a restore; conflict if the user's key is live)")
  .action((tenantId: string, userId: string, o: { onlyIfKeyErased?: string }) =>
    // A generation that is no number is sent as it is: the service refuses it with its reason.
    withApi(async (api) => print(await api.call(Subjects.usersDelete, { tenantId, userId, ...(o.onlyIfKeyErased !== undefined ? { onlyIfKeyErased: /^\d+$/.test(o.onlyIfKeyErased) ? Number(o.onlyIfKeyErased) : o.onlyIfKeyErased } : {}) }))),
  );

// ---- voice messages ----------------------------------------------------------------------------
const voice = program.command('voice-messages').description("the tenant's own recordings of the call's messages (admin scope)");
voice
  .command('upload <tenant> <type> <language> <file>')
  .description('a WAV or MP3 of at most 1 MB (checked by its content) for one message type (e.g. greetingStandard) and language (e.g. fr); replaces the one before')
  .action((tenantId: string, type: string, language: string, file: string) =>
    withApi(async (api) => {
      const bytes = await readFile(file).catch((error: Error) => {
        throw new CliError(`cannot read ${file}: ${error.message}`, 'invalid_request');
      });
      if (bytes.length > MAX_VOICE_MESSAGE_BYTES) throw new CliError(`${file} is larger than 1 MB`, 'invalid_request');
      const object = `${tenantId}/${randomUUID()}`;
      await api.putObject(VoiceMessageBuckets.uploads, object, bytes);
      print(await api.call(Subjects.voiceMessagesUpload, { tenantId, type, language, object }));
    }),
  );
voice
  .command('list <tenant>')
  .description('the recordings of the tenant, by type and language')
  .action((tenantId: string) =>
    withApi(async (api, globals) => {
      const reply = await api.call<{ messages: Array<Record<string, unknown>> }>(Subjects.voiceMessagesList, { tenantId });
      process.stdout.write(render(reply.messages, ['type', 'language', 'format', 'bytes', 'durationSeconds', 'uploadedAt'], globals.format));
    }),
  );
voice
  .command('delete <tenant> <type> <language>')
  .description('back to the default script for that type and language')
  .action((tenantId: string, type: string, language: string) => withApi(async (api) => print(await api.call(Subjects.voiceMessagesDelete, { tenantId, type, language }))));

// ---- hardware OATH tokens ----------------------------------------------------------------------
/** Standard input, whole (a password or key piped in: it stays out of the command line and the shell history). */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A token file's format: as given, else from its extension. */
export function importFormatOf(file: string, given?: string): 'csv' | 'pskc' {
  if (given === 'csv' || given === 'pskc') return given;
  if (/\.csv$/i.test(file)) return 'csv';
  if (/\.(pskc|xml)$/i.test(file)) return 'pskc';
  throw new CliError(`${file}: cannot tell the format from the name; give --file-format csv or --file-format pskc`, 'invalid_request');
}

/** The job's state as one line: how far it got. */
const progressLine = (s: OathImportStatusReply) =>
  s.total > 0 ? `${s.state}: ${s.processed} of ${s.total} tokens (${s.imported} imported, ${s.failed} refused)` : `${s.state}${s.state === 'queued' || s.state === 'running' ? ': reading the file' : ''}`;

/** Writes a finished job's whole error file (from MFA_IMPORTS) to `file`; says so on standard error. */
async function writeErrors(api: Api, status: OathImportStatusReply, file: string): Promise<void> {
  if (!status.errorsObject) {
    const ended = status.state === 'completed' || status.state === 'failed';
    process.stderr.write(`mfa: ${ended ? 'no row was refused: no error file' : 'the job has not ended: its error file is written when it does'}; ${file} not written\n`);
    if (!ended) process.exitCode = 1;
    return;
  }
  const stream = await api.getObject(IMPORTS_BUCKET, status.errorsObject);
  if (!stream) throw new CliError(`the error file ${status.errorsObject} is gone (kept 7 days)`, 'not_found');
  await pipeline(Readable.fromWeb(stream as Parameters<typeof Readable.fromWeb>[0]), createWriteStream(file)).catch((error: Error) => {
    throw new CliError(`cannot write ${file}: ${error.message}`, 'unavailable');
  });
  process.stderr.write(`mfa: ${status.failed} refused row(s) written to ${file}\n`);
}

/** Polls the job until it ends, showing its progress on standard error. */
async function follow(api: Api, tenantId: string, jobId: string): Promise<OathImportStatusReply> {
  const tty = process.stderr.isTTY === true;
  let last = '';
  for (;;) {
    const status = await api.call<OathImportStatusReply>(Subjects.oathImportStatus, { tenantId, jobId });
    const line = progressLine(status);
    const ended = status.state === 'completed' || status.state === 'failed';
    if (line !== last) process.stderr.write(tty ? `\r\x1b[K${line}${ended ? '\n' : ''}` : `${line}\n`);
    else if (ended && tty) process.stderr.write('\n');
    last = line;
    if (ended) return status;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

const oath = program.command('oath').description("hardware OATH tokens: import a vendor's file (CSV or PSKC), the inventory, assignment and activation (admin scope)");
oath
  .command('import <tenant> <file>')
  .description(
    "import a vendor's file of TOTP tokens as a background job and print its id; a file larger than one request carries (~1000 KiB) goes through the MFA_IMPORTS object store",
  )
  .addOption(new Option('--file-format <format>', 'the file\'s format (default: from its extension: .csv, or .pskc and .xml); not --format, which is the output\'s').choices(['csv', 'pskc']))
  .option('--password-stdin', "read an encrypted PSKC file's password from standard input (or set MFA_PSKC_PASSWORD)")
  .option('--psk-hex-stdin', "read an encrypted PSKC file's pre-shared AES key, in hex, from standard input (or set MFA_PSKC_PSK)")
  .option('--replace', 'a serial number already in the inventory gets the new token (whoever held the old one loses it); without it such rows are refused')
  .option('--wait', 'follow the job to its end, its progress on standard error, then print its status; exit code 1 if the job failed or any row was refused')
  .option('--errors <file>', 'with --wait: write the rows the job refused, as CSV, to this file')
  .action((tenantId: string, file: string, o: { fileFormat?: string; passwordStdin?: boolean; pskHexStdin?: boolean; replace?: boolean; wait?: boolean; errors?: string }) =>
    withApi(async (api) => {
      const format = importFormatOf(file, o.fileFormat);
      if (o.errors && !o.wait) throw new CliError('--errors needs --wait (or later: `mfa oath status <tenant> <jobId> --errors <file>`)', 'invalid_request');
      if (o.passwordStdin && o.pskHexStdin) throw new CliError('give --password-stdin or --psk-hex-stdin, not both', 'invalid_request');
      // Secrets come from standard input or the environment, never from the command line.
      const password = o.passwordStdin ? (await readStdin()).replace(/\r?\n$/, '') : o.pskHexStdin ? undefined : process.env.MFA_PSKC_PASSWORD || undefined;
      const psk = o.pskHexStdin ? (await readStdin()).replace(/[\s:]/g, '') : o.passwordStdin ? undefined : process.env.MFA_PSKC_PSK?.replace(/[\s:]/g, '') || undefined;
      if (password !== undefined && psk !== undefined) throw new CliError('MFA_PSKC_PASSWORD and MFA_PSKC_PSK are both set: give the password or the key, not both', 'invalid_request');
      if ((password !== undefined || psk !== undefined) && format !== 'pskc') throw new CliError('a password or pre-shared key is only for PSKC files', 'invalid_request');
      const size = await stat(file).then(
        (s) => s.size,
        (error: Error) => {
          throw new CliError(`cannot read ${file}: ${error.message}`, 'invalid_request');
        },
      );
      if (size === 0) throw new CliError(`${file} is empty`, 'invalid_request');
      if (size > MAX_IMPORT_FILE_BYTES) throw new CliError(`${file} is larger than ${MAX_IMPORT_FILE_BYTES / (1024 * 1024)} MiB: split it`, 'invalid_request');
      const options = { tenantId, format, ...(password !== undefined ? { password } : {}), ...(psk !== undefined ? { psk } : {}), ...(o.replace ? { replace: true } : {}) };
      // Inline when the whole request fits (text as it is, other bytes as base64); else through the object store.
      let inline: Record<string, unknown> | undefined;
      if (size <= MAX_IMPORT_REQUEST_BYTES) {
        const bytes = await readFile(file);
        let content: Record<string, unknown>;
        try {
          content = { content: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
        } catch {
          content = { content: bytes.toString('base64'), encoding: 'base64' };
        }
        const body = { ...options, ...content };
        if (Buffer.byteLength(JSON.stringify(body), 'utf8') <= MAX_IMPORT_REQUEST_BYTES) inline = body;
      }
      let object: string | undefined;
      if (!inline) {
        object = `${tenantId}/cli-${randomUUID()}`;
        await api.putObjectStream(IMPORTS_BUCKET, object, Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>);
      }
      let jobId: string;
      try {
        jobId = (await api.call<{ jobId: string }>(Subjects.oathImport, inline ?? { ...options, object })).jobId;
      } catch (error) {
        // Refused: nothing will read the upload.
        if (object && error instanceof CliError && error.code !== 'unavailable') await api.deleteObject(IMPORTS_BUCKET, object);
        throw error;
      }
      if (!o.wait) return print({ jobId });
      const status = await follow(api, tenantId, jobId);
      const { errorsCsv: _csv, errorsTruncated: _truncated, ...summary } = status;
      print(summary);
      if (status.state === 'failed') process.stderr.write(`mfa: the import failed: ${status.reason ?? 'no reason given'}\n`);
      if (o.errors) await writeErrors(api, status, o.errors);
      else if (status.failed > 0) process.stderr.write(`mfa: ${status.failed} row(s) refused; \`mfa oath status ${tenantId} ${jobId} --errors errors.csv\` writes them with why\n`);
      if (status.state === 'failed' || status.failed > 0) process.exitCode = 1;
    }),
  );
oath
  .command('status <tenant> <jobId>')
  .description("an import job's state and counts; --errors writes its whole error file (row, user, serial, failure reason)")
  .option('--errors <file>', 'write the rows the job refused, as CSV, to this file (once the job has ended)')
  .action((tenantId: string, jobId: string, o: { errors?: string }) =>
    withApi(async (api) => {
      const status = await api.call<OathImportStatusReply>(Subjects.oathImportStatus, { tenantId, jobId });
      if (!o.errors) return print(status);
      const { errorsCsv: _csv, errorsTruncated: _truncated, ...summary } = status;
      print(summary);
      await writeErrors(api, status, o.errors);
    }),
  );
const oathTokens = oath.command('tokens').description("the tenant's hardware tokens: list, assign to a user, activate");
oathTokens
  .command('list <tenant>')
  .description('the inventory, a page at a time (the next page\'s --cursor is printed on standard error)')
  .addOption(new Option('--state <state>', 'only tokens in this state').choices([...OATH_TOKEN_STATES]))
  .option('--limit <n>', 'tokens per page (1–500)', '50')
  .option('--cursor <cursor>', 'the page after the one that printed it')
  .action((tenantId: string, o: { state?: string; limit: string; cursor?: string }) =>
    withApi(async (api, g) => {
      const reply = await api.call<OathTokensListReply>(Subjects.oathTokensList, { tenantId, limit: Number(o.limit) || 50, ...(o.state ? { state: o.state } : {}), ...(o.cursor ? { cursor: o.cursor } : {}) });
      process.stdout.write(render(reply.items, ['serialNumber', 'state', 'userId', 'manufacturer', 'model', 'algorithm', 'digits', 'period', 'importedAt', 'activatedAt'], g.format));
      if (reply.nextCursor) process.stderr.write(`more: --cursor ${reply.nextCursor}\n`);
    }),
  );
oathTokens
  .command('assign <tenant> <serial> <user>')
  .description('give an unassigned token to a user; it becomes a sign-in method once activated')
  .action((tenantId: string, serialNumber: string, userId: string) => withApi(async (api) => print(await api.call(Subjects.oathTokensAssign, { tenantId, serialNumber, userId }))));
oathTokens
  .command('activate <tenant> <serial> <code>')
  .description('activate an assigned token with the code it shows now; exit code 1 when the code is not right')
  .action((tenantId: string, serialNumber: string, code: string) =>
    withApi(async (api) => {
      const reply = await api.call<OathTokensActivateReply>(Subjects.oathTokensActivate, { tenantId, serialNumber, code });
      print(reply);
      if (!reply.active) {
        process.stderr.write(`mfa: not the code ${serialNumber} shows now; nothing changed\n`);
        process.exitCode = 1;
      }
    }),
  );

// ---- app passwords -----------------------------------------------------------------------------
const appPasswords = program.command('apppasswords').description('app passwords of legacy clients (the tenant\'s appPasswords.allowed)');
appPasswords
  .command('create <tenant> <user>')
  .description('create one; the password is printed once')
  .option('--name <name>', 'what it is for, e.g. "Outlook 2010"')
  .action((tenantId: string, userId: string, o: { name?: string }) => withApi(async (api) => print(await api.call(Subjects.usersAppPasswordsCreate, { tenantId, userId, ...(o.name ? { name: o.name } : {}) }))));
appPasswords
  .command('list <tenant> <user>')
  .description('the user\'s app passwords, oldest first: id, what each is for, when it was created (never the password)')
  .action((tenantId: string, userId: string) =>
    withApi(async (api, g) => {
      const user = await api.call<Partial<UsersGetReply>>(Subjects.usersGet, { tenantId, userId });
      // An older user-settings (a rolling upgrade) counts them only: say so rather than print none.
      if (!user.appPasswordList) throw new CliError(`the service answered a count only (${user.appPasswords ?? '?'}): upgrade user-settings to list them`, 'unavailable');
      process.stdout.write(render(user.appPasswordList, ['appPasswordId', 'name', 'createdAt'], g.format));
    }),
  );
appPasswords
  .command('delete <tenant> <user>')
  .description('delete one (--id) or all of the user\'s app passwords')
  .option('--id <appPasswordId>')
  .action((tenantId: string, userId: string, o: { id?: string }) => withApi(async (api) => print(await api.call(Subjects.usersAppPasswordsDelete, { tenantId, userId, ...(o.id ? { appPasswordId: o.id } : {}) }))));
appPasswords
  .command('verify <tenant> <user>')
  .description('check a legacy client\'s password, as an IdP does (challenges scope); the password from MFA_APP_PASSWORD or else standard input, so it stays out of the command line and the shell history')
  .action((tenantId: string, userId: string) =>
    withApi(async (api) => {
      const password = (process.env.MFA_APP_PASSWORD ?? (await readStdin())).replace(/\r?\n$/, '');
      print(await api.call(Subjects.appPasswordsVerify, { tenantId, userId, password }));
    }),
  );

// ---- challenges (what an IdP sends) -------------------------------------------------------------
const challenges = program.command('challenges').description('challenge a user as an IdP does (challenges scope)');
challenges
  .command('start <tenant> <user>')
  .description('start a challenge; prints its id and status. Only the options given are sent')
  .addOption(new Option('--method <method>', 'the method; the user\'s default when omitted').choices(['sms', 'voice', 'push', 'totp']))
  .option('--ip <address>', 'the sign-in\'s client IP')
  .option('--app <application>', 'the application signed in to')
  .option('--request-id <id>', 'your correlation id (requestId), recorded in the challenge\'s event')
  .option('--inside-corporate-network', 'the federated claim that the user is inside the corporate network (context.insideCorporateNetwork): approved with the tenant\'s trustedIps.federatedBypass')
  .option('--remember-device', 'ask for a remember token when challenges verify approves this challenge (context.rememberDevice; the tenant\'s rememberMfa)')
  .option('--remember-token-stdin', 'send the remember token a verify returned (context.rememberToken), read from standard input; never an argument')
  .option('--remember-token-env', 'send the remember token held by MFA_REMEMBER_TOKEN (context.rememberToken)')
  .option('--legacy-client', 'a client that cannot show an MFA prompt (context.legacyClient): app passwords and the last-MFA rule of rememberMfa apply')
  .option('--radius-server <name>', 'as the RADIUS front sends it (context.radius.serverName): the RADIUS client\'s name; needs --radius-nas')
  .option('--radius-nas <address>', 'the NAS\'s IP address (context.radius.serverIp); needs --radius-server')
  .addOption(new Option('--radius-password-mode <mode>', 'context.radius.passwordMode (otp: never SMS); needs --radius-server').choices(['challenge', 'otp']))
  .action(
    (
      tenantId: string,
      userId: string,
      o: {
        method?: string;
        ip?: string;
        app?: string;
        requestId?: string;
        insideCorporateNetwork?: boolean;
        rememberDevice?: boolean;
        rememberTokenStdin?: boolean;
        rememberTokenEnv?: boolean;
        legacyClient?: boolean;
        radiusServer?: string;
        radiusNas?: string;
        radiusPasswordMode?: string;
      },
    ) =>
      withApi(async (api) => {
        if ((o.radiusServer === undefined) !== (o.radiusNas === undefined) || (o.radiusPasswordMode !== undefined && o.radiusServer === undefined)) {
          throw new CliError('--radius-server and --radius-nas go together (and --radius-password-mode needs them)', 'invalid_request');
        }
        // A remember token skips MFA for its user: a bearer secret, kept out of the command line and the shell history.
        // Only when asked: a token left in the environment must not skip MFA for every start.
        if (o.rememberTokenStdin && o.rememberTokenEnv) throw new CliError('--remember-token-stdin or --remember-token-env, not both', 'invalid_request');
        const rememberToken = o.rememberTokenStdin ? (await readStdin()).trim() : o.rememberTokenEnv ? process.env.MFA_REMEMBER_TOKEN?.trim() || undefined : undefined;
        if (o.rememberTokenStdin && !rememberToken) throw new CliError('--remember-token-stdin: standard input is empty', 'invalid_request');
        if (o.rememberTokenEnv && !rememberToken) throw new CliError('--remember-token-env: MFA_REMEMBER_TOKEN is not set', 'invalid_request');
        const context = {
          ...(o.insideCorporateNetwork ? { insideCorporateNetwork: true } : {}),
          ...(rememberToken !== undefined ? { rememberToken } : {}),
          ...(o.rememberDevice ? { rememberDevice: true } : {}),
          ...(o.legacyClient ? { legacyClient: true } : {}),
          ...(o.radiusServer !== undefined
            ? { radius: { serverName: o.radiusServer, serverIp: o.radiusNas, ...(o.radiusPasswordMode ? { passwordMode: o.radiusPasswordMode } : {}) } }
            : {}),
        };
        print(
          await api.call(Subjects.challengeStart, {
            tenantId,
            userId,
            ...(o.method ? { method: o.method } : {}),
            ...(o.ip ? { clientIp: o.ip } : {}),
            ...(o.app ? { application: o.app } : {}),
            ...(o.requestId !== undefined ? { requestId: o.requestId } : {}),
            ...(Object.keys(context).length > 0 ? { context } : {}),
          }),
        );
      }),
  );
challenges
  .command('verify <tenant> <challengeId> <code>')
  .description('check the code the user typed')
  .action((tenantId: string, challengeId: string, code: string) => withApi(async (api) => print(await api.call(Subjects.challengeVerify, { tenantId, challengeId, code }))));
challenges
  .command('status <tenant> <challengeId>')
  .description('where a challenge stands')
  .action((tenantId: string, challengeId: string) => withApi(async (api) => print(await api.call(Subjects.challengeStatus, { tenantId, challengeId }))));
challenges
  .command('resend <tenant> <challengeId>')
  .description('send a pending SMS challenge\'s code again (the same code); prints how many resends are left')
  .action((tenantId: string, challengeId: string) => withApi(async (api) => print(await api.call(Subjects.challengeResend, { tenantId, challengeId }))));

// ---- radius ------------------------------------------------------------------------------------
/**
 * The RADIUS front from a terminal, as a VPN asks it (docs/radius.md): to check a deployment
 * without radclient. The shared secret comes from the environment, never the command line.
 */
const radius = program.command('radius').description("ask the RADIUS front as a VPN does: a sign-in, or a Status-Server (the client's shared secret from --secret-env)");
const radiusTarget = (server: string, o: { secretEnv: string; wait: string }): RadiusTarget => {
  const secret = process.env[o.secretEnv];
  if (!secret) throw new CliError(`set ${o.secretEnv} to the RADIUS client's shared secret (as in RADIUS_CLIENTS)`, 'invalid_request');
  const { host, port } = parseServer(server);
  return { host, port, secret: Buffer.from(secret, 'utf8'), timeoutMs: Math.max(1, Number(o.wait) || 30) * 1000 };
};
const describeAnswer = (a: RadiusAnswer) => `${a.code}${a.message ? `: ${a.message}` : ''} (${a.ms.toFixed(0)} ms)\n`;
radius
  .command('status <server>')
  .description('a Status-Server (RFC 5997): Access-Accept when the front is up and the secret is right')
  .option('--secret-env <name>', 'the environment variable holding the shared secret', 'RADIUS_SECRET')
  .option('--wait <seconds>', 'how long to wait for the answer', '5')
  .action(async (server: string, o: { secretEnv: string; wait: string }) => {
    const answer = await radiusRequest(radiusTarget(server, o), { code: Code.StatusServer });
    process.stdout.write(describeAnswer(answer));
    if (answer.code !== 'Access-Accept') process.exitCode = 1;
  });
radius
  .command('signin <server> <user>')
  .description('an Access-Request for the user (server: host or host:port); answers each Access-Challenge with the code typed (or --code); exit 0 on Access-Accept')
  .option('--secret-env <name>', 'the environment variable holding the shared secret', 'RADIUS_SECRET')
  .option('--password <text>', "the first request's User-Password (otp mode: the code itself)")
  .option('--code <digits>', 'the answer to an Access-Challenge, instead of asking for it')
  .option('--calling-station <id>', 'Calling-Station-Id: the client\'s address as a VPN reports it, e.g. 203.0.113.7:51234')
  .option('--nas-identifier <name>', 'NAS-Identifier: shown in the report as the application')
  .option('--wait <seconds>', 'how long to wait for each answer (push and calls wait for the user)', '30')
  .action(async (server: string, user: string, o: { secretEnv: string; password?: string; code?: string; callingStation?: string; nasIdentifier?: string; wait: string }) => {
    const target = radiusTarget(server, o);
    const attributes = [
      ...(o.callingStation ? [{ type: Attr.CallingStationId, value: Buffer.from(o.callingStation, 'utf8') }] : []),
      ...(o.nasIdentifier ? [{ type: Attr.NasIdentifier, value: Buffer.from(o.nasIdentifier, 'utf8') }] : []),
    ];
    let answer = await radiusRequest(target, { user, ...(o.password !== undefined ? { password: o.password } : {}), attributes });
    process.stdout.write(describeAnswer(answer));
    // An Access-Challenge asks again until the server accepts or rejects (a wrong code asks again).
    for (let round = 0; answer.code === 'Access-Challenge' && round < 10; round++) {
      let code = round === 0 ? o.code : undefined;
      if (code === undefined) {
        if (!process.stdin.isTTY && round > 0) break;
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        // Standard input closed (a pipe, CI): no code, so no sign-in (exit 1), not a silent exit 0.
        const closed = new Promise<undefined>((resolve) => rl.once('close', () => resolve(undefined)));
        const typed = await Promise.race([rl.question('code: '), closed]).catch(() => undefined);
        rl.close();
        if (typed === undefined) {
          process.stderr.write('no code: standard input is closed\n');
          break;
        }
        code = typed.trim();
      }
      answer = await radiusRequest(target, { user, password: code, ...(answer.state ? { state: answer.state } : {}), attributes });
      process.stdout.write(describeAnswer(answer));
    }
    if (answer.code !== 'Access-Accept') process.exitCode = 1;
  });

// ---- fraud -------------------------------------------------------------------------------------
const fraud = program.command('fraud').description('fraud alerts and per-IP lockout');
fraud
  .command('report <tenant> <user>')
  .description('report a sign-in as fraud (challenges scope)')
  .addOption(new Option('--source <source>', 'who reports it').choices(['app', 'phone', 'idp']).default('idp'))
  .option('--challenge <challengeId>', 'the sign-in reported (denied if still pending)')
  .option('--comment <text>')
  .action((tenantId: string, userId: string, o: { source: string; challenge?: string; comment?: string }) =>
    withApi(async (api) =>
      print(await api.call(Subjects.fraudReport, { tenantId, userId, source: o.source, ...(o.challenge ? { challengeId: o.challenge } : {}), ...(o.comment ? { comment: o.comment } : {}) })),
    ),
  );
fraud
  .command('ips <tenant>')
  .description('client addresses locked now (reports scope)')
  .action((tenantId: string) =>
    withApi(async (api, g) => {
      const reply = await api.call<{ items: Array<Record<string, unknown>> }>(Subjects.fraudIpsList, { tenantId });
      process.stdout.write(render(reply.items, ['ip', 'lockedAt', 'until', 'failures', 'users', 'dryRun'], g.format));
    }),
  );
fraud
  .command('unlock-ip <tenant> <ip>')
  .description('lift an address\'s lock (admin scope)')
  .requiredOption('--reason <reason>')
  .action((tenantId: string, ip: string, o: { reason: string }) => withApi(async (api) => print(await api.call(Subjects.fraudIpsUnlock, { tenantId, ip, reason: o.reason }))));

// ---- reports -----------------------------------------------------------------------------------
const reports = program.command('reports').description('reports (reports scope); --format table, json or csv');
const range = (c: Command) => paging(c.option('--from <iso>', 'from (inclusive), e.g. 2026-11-01T00:00:00Z').option('--to <iso>', 'to (exclusive)').option('--limit <n>', 'rows per page (1–500)', '50'));
const filters = (o: Record<string, unknown>, names: Record<string, string>) =>
  Object.fromEntries([...Object.entries(names).filter(([flag]) => o[flag] !== undefined).map(([flag, field]) => [field, o[flag]]), ['limit', Number(o.limit) || 50]]);

range(reports.command('signins <tenant>').description('the sign-in report, newest first'))
  .option('--user <userId>')
  .option('--challenge <challengeId>', 'one sign-in: the challenge id challenges start printed')
  .addOption(new Option('--result <result>').choices(['success', 'failure']))
  .addOption(new Option('--via <via>', 'how the sign-in came').choices(['nats', 'radius']))
  .action((tenantId: string, o: Record<string, unknown>) =>
    withApi(async (api, g) => {
      const rows = await pages(api, Subjects.reportsSigninsQuery, { tenantId, ...filters(o, { user: 'userId', challenge: 'challengeId', result: 'result', via: 'via', from: 'from', to: 'to' }) }, o);
      process.stdout.write(render(rows, ['occurredAt', 'userId', 'displayName', 'authMethod', 'result', 'resultDetail', 'clientIp', 'application', 'via', 'serverName', 'challengeId', 'deviceId'], g.format));
    }),
  );
range(reports.command('fraud <tenant>').description('fraud alerts, newest first'))
  .option('--user <userId>')
  .addOption(new Option('--source <source>').choices(['app', 'phone', 'idp']))
  .action((tenantId: string, o: Record<string, unknown>) =>
    withApi(async (api, g) => {
      const rows = await pages(api, Subjects.reportsFraudQuery, { tenantId, ...filters(o, { user: 'userId', source: 'source', from: 'from', to: 'to' }) }, o);
      process.stdout.write(render(rows, ['occurredAt', 'userId', 'phoneNumber', 'source', 'clientIp', 'application', 'challengeDenied', 'blocked', 'blockedUntil', 'notifications'], g.format));
    }),
  );
range(reports.command('blocked <tenant>').description('blocks, unblocks and IP locks, newest first'))
  .option('--user <userId>')
  .option('--ip <address>')
  .addOption(new Option('--action <action>').choices(['block', 'unblock', 'auto_unblock', 'ip_lock', 'ip_unlock']))
  .action((tenantId: string, o: Record<string, unknown>) =>
    withApi(async (api, g) => {
      const rows = await pages(api, Subjects.reportsBlockedQuery, { tenantId, ...filters(o, { user: 'userId', ip: 'ip', action: 'action', from: 'from', to: 'to' }) }, o);
      process.stdout.write(render(rows, ['occurredAt', 'action', 'userId', 'ip', 'reason', 'source', 'actor', 'until', 'dryRun'], g.format));
    }),
  );
/** The start of the usage period after `period` (a day such as 2026-11-01, or an instant for minute and hour), as --from takes it. */
function periodAfter(period: string, granularity: string): string | undefined {
  const at = new Date(Date.parse(period));
  if (Number.isNaN(at.getTime())) return undefined;
  if (granularity === 'month') at.setUTCMonth(at.getUTCMonth() + 1);
  else at.setTime(at.getTime() + ({ minute: 60_000, hour: 3_600_000, day: 86_400_000 }[granularity] ?? 86_400_000));
  return at.toISOString().replace('.000Z', 'Z');
}
/** Periods per usage page: the most the API answers at once. */
const USAGE_PAGE = 500;
reports
  .command('usage <tenant>')
  .description('authentications and enabled users per period, oldest first')
  .requiredOption('--from <iso>', 'from (inclusive)')
  .requiredOption('--to <iso>', 'to (exclusive)')
  .addOption(new Option('--granularity <g>').choices(['minute', 'hour', 'day', 'month']).default('day'))
  .option('--all', 'every page')
  .action((tenantId: string, o: { from: string; to: string; granularity: string; all?: boolean }) =>
    withApi(async (api, g) => {
      const { items: rows, next } = await paged(api, Subjects.reportsUsageQuery, { tenantId, from: o.from, to: o.to, granularity: o.granularity, limit: USAGE_PAGE }, Boolean(o.all));
      const more = next !== undefined;
      // Table and CSV: one column per method (its sign-ins, succeeded and failed), 0 for a method the period did not see.
      const flat = rows.map((r) => {
        const a = r.authentications as { total: number; success: number; failure: number };
        const byMethod = r.byMethod as Array<{ method: string; success: number; failure: number }>;
        return { period: r.period, authentications: a.total, success: a.success, failure: a.failure, enabledUsers: r.enabledUsers, ...usageByMethod({ byMethod }) };
      });
      process.stdout.write(render(g.format === 'json' ? rows : flat, g.format === 'json' ? [] : ['period', 'authentications', 'success', 'failure', 'enabledUsers', ...USAGE_METHODS], g.format));
      if (more) {
        const rest = periodAfter(String(rows.at(-1)?.period), o.granularity);
        process.stderr.write(
          `mfa: truncated at ${rows.length} periods (one page): narrow --from/--to${rest ? ` (the rest begins at --from ${rest})` : ''}, take a coarser --granularity, or add --all for every period\n`,
        );
      }
    }),
  );
range(reports.command('audit <tenant>').description('admin actions, newest first'))
  .option('--user <userId>', 'the user the action was about')
  .option('--client <clientId>', 'the acting API client (platform: the platform key, the console among them)')
  .option('--operator <sub>', "what one console operator did: their sub, as the operator column shows it")
  .option('--subject <subject>', 'one action, its subject exactly as the subject column shows it, e.g. mfa.v1.users.delete')
  .action((tenantId: string, o: Record<string, unknown>) =>
    withApi(async (api, g) => {
      const rows = await pages(api, Subjects.reportsAuditQuery, { tenantId, ...filters(o, { user: 'userId', client: 'clientId', operator: 'operator', subject: 'subject', from: 'from', to: 'to' }) }, o);
      process.stdout.write(render(rows, ['occurredAt', 'clientId', 'operator', 'subject', 'userId', 'outcome'], g.format));
    }),
  );

// Challenge and device ids are base64url and begin with '-' one time in 64 (a user's tag): an
// argument that begins with '-' is taken as the argument it stands in for, not as an unknown
// option. A mistyped option is still refused, as an argument too many.
const takeDashedArguments = (command: Command): void => {
  if (command.registeredArguments.length > 0) command.allowUnknownOption();
  for (const sub of command.commands) takeDashedArguments(sub);
};
takeDashedArguments(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`mfa: ${error instanceof CliError ? error.message : (error as Error).message}\n`);
  process.exitCode = 1;
});
