import { Body, Controller, Get, Inject, Optional, Param, Post, Query, Req, Res } from '@nestjs/common';
import type { Response } from 'express';
import { stringify } from 'csv-stringify/sync';
import QRCode from 'qrcode';
import {
  API_VERSION,
  ContractError,
  SCOPES,
  Subjects,
  type AuditItem,
  type AuditQueryReply,
  type BlockedItem,
  type BlockedQueryReply,
  type ClientsCreateReply,
  type ClientsListReply,
  type FraudIpsListReply,
  type FraudItem,
  type FraudQueryReply,
  type SigninItem,
  type SigninsQueryReply,
  type TenantsDeleteReply,
  type TenantsGetReply,
  type TotpActivateReply,
  type UsageItem,
  type UsageQueryReply,
  UsageQueryRequest,
  type UsersGetReply,
  type UsersListReply,
  UsersListMethod,
  BLOCK_ACTIONS,
  FRAUD_SOURCES,
  MAX_IMPORT_FILE_BYTES,
  MAX_VOICE_MESSAGE_BYTES,
  USAGE_METHODS,
  usageByMethod,
  OATH_TOKEN_STATES,
  OathImportFormat,
  OathJobId,
  OathTokenState,
  type OathImportReply,
  type OathImportStatusReply,
  type OathTokensActivateReply,
  type OathTokensListReply,
  VOICE_MESSAGE_TYPES,
  VoiceMessageType,
  type VoiceMessagesListReply,
  type VoiceMessagesUploadReply,
} from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';
import type { MfaApi } from '../adapters/mfa-api.js';
import type { UploadSlots } from '../adapters/upload-slots.js';
import { canChange, canRead, type Access } from '../domain/roles.js';
import { changedSettings, FormError, formValues, patchFromForm, SETTING_FIELDS, shownSettings, shownToken } from '../domain/settings-form.js';
import { LOGGER_TOKEN, MFA_API, UPLOAD_SLOTS, VIEWS } from '../tokens.js';
import type { Views } from './views.js';
import type { WebRequest } from './web.js';

/** Rows a CSV export holds at most (pages of 500 read one after the other). */
const CSV_MAX_ROWS = 100_000;

/** What every subject of the API begins with; the audit page shows actions without it. */
const SUBJECT_PREFIX = `mfa.v${API_VERSION}.`;

/** A report as a CSV download: the query it pages through and its columns (a heading, and the cell of an item). */
interface CsvReport<T> {
  /** The file is `<name>-<tenant>.csv`. */
  name: string;
  subject: string;
  columns: ReadonlyArray<readonly [heading: string, cell: (item: T) => unknown]>;
}
/** Columns that are the item's fields of the same name. */
const fields = <T>(...names: Array<keyof T & string>) => names.map((name) => [name, (item: T) => item[name]] as const);

/** The reports a page exports with `?format=csv`, with the page's filters. */
const CSV_REPORTS: { signins: CsvReport<SigninItem>; audit: CsvReport<AuditItem>; fraud: CsvReport<FraudItem>; blocked: CsvReport<BlockedItem>; usage: CsvReport<UsageItem> } = {
  signins: {
    name: 'signins',
    subject: Subjects.reportsSigninsQuery,
    columns: fields<SigninItem>('occurredAt', 'userId', 'displayName', 'email', 'phoneNumber', 'authMethod', 'result', 'resultDetail', 'clientIp', 'application', 'serverName', 'serverIp', 'challengeId', 'via', 'deviceId'),
  },
  audit: {
    name: 'audit',
    subject: Subjects.reportsAuditQuery,
    columns: [
      ...fields<AuditItem>('occurredAt', 'clientId'),
      // The operator's sub is what reports.audit.query's `operator` filter takes.
      ['operator', (item: AuditItem) => item.operator?.sub],
      ['operatorName', (item: AuditItem) => item.operator?.name],
      ['operatorEmail', (item: AuditItem) => item.operator?.email],
      ...fields<AuditItem>('subject', 'userId', 'outcome'),
    ],
  },
  fraud: {
    name: 'fraud',
    subject: Subjects.reportsFraudQuery,
    columns: [
      ...fields<FraudItem>('occurredAt', 'userId', 'displayName', 'email', 'phoneNumber', 'source', 'clientIp', 'application', 'challengeId', 'deviceId', 'comment', 'challengeDenied', 'blocked', 'blockedUntil', 'reportedBy'),
      ['notificationsSent', (item: FraudItem) => item.notifications.sent],
      ['notificationsFailed', (item: FraudItem) => item.notifications.failed],
      ...fields<FraudItem>('alertId'),
    ],
  },
  blocked: {
    name: 'blocked',
    subject: Subjects.reportsBlockedQuery,
    columns: [
      ...fields<BlockedItem>('occurredAt', 'action', 'userId', 'ip', 'reason', 'source'),
      ['actorClientId', (item: BlockedItem) => item.actor?.clientId],
      ['actorOperator', (item: BlockedItem) => item.actor?.operator],
      ...fields<BlockedItem>('until', 'dryRun'),
    ],
  },
  // Pages by cursor as the others do; a period's rows are its months or days, oldest first.
  usage: {
    name: 'usage',
    subject: Subjects.reportsUsageQuery,
    columns: [
      ...fields<UsageItem>('period'),
      ['authentications', (item: UsageItem) => item.authentications.total],
      ['succeeded', (item: UsageItem) => item.authentications.success],
      ['failed', (item: UsageItem) => item.authentications.failure],
      // One column per method, the same columns on every row whatever the period saw: its sign-ins
      // by that method (succeeded and failed), 0 for a method the period did not see.
      ...USAGE_METHODS.map((method) => [method, (item: UsageItem) => usageByMethod(item)[method]] as const),
      ...fields<UsageItem>('enabledUsers'),
    ],
  },
};
/** The periods the usage page offers (the contract also has minute and hour, for the overview). */
const USAGE_PAGE_GRANULARITIES = ['month', 'day'] as const;

/**
 * CSV text of rows. A cell that begins with = + - @ (or their full-width forms), a tab or a carriage
 * return would be a formula in a spreadsheet (CSV injection): csv-stringify prefixes it with a quote.
 * Booleans are written as true and false, not as csv-stringify's 1 and empty.
 */
const csvText = (rows: unknown[][]) => stringify(rows, { escape_formulas: true, cast: { boolean: (value) => String(value) } });

/**
 * Writes a chunk of a download and waits until the connection has taken it when its buffer is
 * full; false once the browser has gone (closed, cancelled), so that a download nobody reads
 * neither piles up in memory nor keeps asking the reports for pages.
 */
function sent(res: Response, chunk: string): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  if (res.write(chunk)) return Promise.resolve(true);
  if (res.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (taken: boolean) => {
      res.off('drain', drained);
      res.off('close', closed);
      resolve(taken);
    };
    const drained = () => done(true);
    const closed = () => done(false);
    res.on('drain', drained);
    res.on('close', closed);
  });
}
/** The profile fields of users.register the users page edits. */
const PROFILE_FIELDS = ['displayName', 'email', 'phoneNumber', 'phoneExtension', 'language'] as const;
/** Query-string filters and free text are bounded (and trimmed) before they reach the contract (which checks them again). */
const text = (value: unknown, max = 256) => (typeof value === 'string' && value.trim() !== '' ? value.trim().slice(0, max) : undefined);
/**
 * A user id exactly as sent: never trimmed, since the contract's UserId keeps spaces and
 * `alice@contoso.com ` is another user than `alice@contoso.com`. Blank is none; longer than the
 * contract allows is refused, not cut (a cut id could name another user).
 */
const userIdOf = (value: unknown): string | undefined => {
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  if (value.length > 256) throw new ContractError('invalid_request', 'userId: must be at most 256 characters');
  return value;
};
/** `2026-11-01`, or a date-time to the minute, second or millisecond with an optional offset (`T`, or a space as the report's time column shows). */
const DATE_FILTER = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(Z|[+-]\d{2}:\d{2})?)?$/;
/**
 * A date filter as ISO 8601: a date is its day's start, and a time without an offset is UTC, as
 * the page says (never the console host's zone). Anything else, or a day the calendar does not
 * have (30 February), is refused: Date.parse would read `1.11.2026` as 10 January, and a filter
 * left out would list rows the box seems to exclude.
 */
const isoDate = (name: string, value: unknown): string | undefined => {
  if (value === undefined || (typeof value === 'string' && value.trim() === '')) return undefined;
  const refused = new ContractError('invalid_request', `${name}: not a date; write 2026-11-01 or 2026-11-01T10:00 (UTC unless an offset such as +01:00 follows)`);
  const match = typeof value === 'string' ? DATE_FILTER.exec(value.trim()) : null;
  if (!match) throw refused;
  const [, year, month, day, hour = '0', minute = '0', second = '0', fraction = '0', offset = 'Z'] = match;
  const parts = [year, month, day, hour, minute, second].map(Number);
  const at = new Date(0);
  at.setUTCFullYear(parts[0]!, parts[1]! - 1, parts[2]);
  at.setUTCHours(parts[3]!, parts[4], parts[5], Number(fraction.padEnd(3, '0')));
  // Out-of-range parts roll over (31 April to 1 May, 24:00 to the next day): they must come back as written.
  const back = [at.getUTCFullYear(), at.getUTCMonth() + 1, at.getUTCDate(), at.getUTCHours(), at.getUTCMinutes(), at.getUTCSeconds()];
  const [offsetHours, offsetMinutes] = offset === 'Z' ? [0, 0] : [Number(offset.slice(1, 3)), Number(offset.slice(4))];
  if (back.some((part, i) => part !== parts[i]) || offsetHours > 23 || offsetMinutes > 59) throw refused;
  return new Date(at.getTime() - (offset.startsWith('-') ? -1 : 1) * (offsetHours * 60 + offsetMinutes) * 60_000).toISOString();
};
const cursorOf = (q: Record<string, unknown>) => (text(q.cursor, 512) ? { cursor: text(q.cursor, 512) } : {});
/** What the import page's script uploads to: `<tenant>/console-<uuid>`, the only objects it may name. */
const consoleUpload = (tenantId: string, value: unknown) =>
  typeof value === 'string' && value.startsWith(`${tenantId}/console-`) && /^[0-9a-f-]{36}$/.test(value.slice(tenantId.length + 9)) ? value : undefined;
/**
 * Token files of one tenant uploaded through the console and not yet imported, or being imported,
 * at most: a tenant admin cannot fill the imports store (shared by every tenant) with uploads.
 */
export const MAX_CONSOLE_IMPORTS_PER_TENANT = 4;
/** A contract error as the page scripts' JSON: its code decides the status. */
const STATUS_OF: Record<string, number> = { invalid_request: 400, not_found: 404, conflict: 409, forbidden: 403, rate_limited: 429, unavailable: 503 };

interface Page {
  req: WebRequest;
  res: Response;
  tenantId: string;
  access: Access;
  operator: NonNullable<WebRequest['session']>['operator'];
}

/**
 * The console's pages. Each checks the operator's role for the tenant first (read, or change for
 * every POST), then asks the services through the public NATS API with the operator named, so
 * every change is in the audit trail with who made it.
 */
@Controller()
export class PagesController {
  constructor(
    @Inject(MFA_API) private readonly api: MfaApi,
    @Inject(VIEWS) private readonly views: Views,
    @Inject(LOGGER_TOKEN) private readonly log: Logger,
    /** Uploads under way across the instances (Redis); absent in tests of the pages alone. */
    @Optional() @Inject(UPLOAD_SLOTS) private readonly slots?: UploadSlots,
  ) {}

  /** The signed-in operator allowed to read (or change) this tenant; otherwise answered here and undefined. */
  private page(req: WebRequest, res: Response, tenantId: string, change = false): Page | undefined {
    if (!req.session || !req.access) {
      // HEAD is a GET without the body (Express routes it to the GET handler): the same answer.
      if (req.method === 'GET' || req.method === 'HEAD') res.redirect(303, `/auth/login?returnTo=${encodeURIComponent(req.originalUrl)}`);
      else this.views.send(res, 'error.njk', { code: 'forbidden', message: 'your session has ended; sign in again' }, 403);
      return undefined;
    }
    const allowed = change ? canChange(req.access, tenantId) : canRead(req.access, tenantId);
    if (!allowed) {
      this.views.send(res, 'error.njk', { ...this.chrome(req, tenantId), code: 'forbidden', message: change ? 'your role may not change this tenant' : 'your role does not include this tenant' }, 403);
      return undefined;
    }
    return { req, res, tenantId, access: req.access, operator: req.session.operator };
  }

  /** What every page's layout shows: who is signed in, the tenant, what they may do. */
  private chrome(req: WebRequest, tenantId?: string) {
    const access = req.access;
    return {
      operator: req.session?.operator,
      csrf: req.session?.csrf,
      tenantId,
      canChange: access && tenantId ? canChange(access, tenantId) : false,
      tenants: access ? [...access.tenants.keys()] : [],
      platform: access?.platform ?? false,
    };
  }

  private async run(p: Page, view: string, active: string, work: () => Promise<Record<string, unknown>>): Promise<void> {
    const context = { ...this.chrome(p.req, p.tenantId), active };
    try {
      this.views.send(p.res, view, { ...context, ...(await work()) });
    } catch (error) {
      if (!(error instanceof ContractError)) this.log.error('console page failed', { view, error });
      this.views.error(p.res, error, context);
    }
  }

  /** The page's tenant, whose role was checked, always wins over anything a body might carry. */
  private call<T>(p: Page, subject: string, body: Record<string, unknown>): Promise<T> {
    return this.api.call<T>(subject, { ...body, tenantId: p.tenantId }, p.operator);
  }

  @Get()
  home(@Req() req: WebRequest, @Res() res: Response): void {
    if (!req.access) return res.redirect(303, '/auth/login');
    const first = [...req.access.tenants.keys()][0];
    res.redirect(303, req.access.platform || !first ? '/tenants' : `/t/${encodeURIComponent(first)}/overview`);
  }

  @Get('tenants')
  tenants(@Req() req: WebRequest, @Res() res: Response, @Query('tenantId') tenantId?: string): void {
    if (!req.access) return res.redirect(303, '/auth/login?returnTo=/tenants');
    const chosen = text(tenantId, 128);
    if (chosen) return res.redirect(303, `/t/${encodeURIComponent(chosen)}/overview`);
    this.views.send(res, 'tenants.njk', { ...this.chrome(req), active: 'tenants' });
  }

  /**
   * A new tenant, with the default settings (platform operators only: only the platform key creates
   * tenants). An existing one is left as it is: the page says so and links to it.
   */
  @Post('tenants')
  async createTenant(@Req() req: WebRequest, @Res() res: Response, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, typeof body.tenantId === 'string' ? body.tenantId.trim() : '', true);
    if (!p) return;
    const context = { ...this.chrome(req), active: 'tenants', created: p.tenantId };
    try {
      if (!req.access?.platform) throw new ContractError('forbidden', 'only a platform operator creates tenants');
      const existing = await this.call<TenantsGetReply>(p, Subjects.tenantsGet, {}).catch((error: unknown) => {
        if (error instanceof ContractError && error.code === 'not_found') return undefined;
        throw error;
      });
      if (existing) {
        this.views.send(res, 'tenants.njk', { ...context, problem: `${p.tenantId} exists already: nothing was changed.`, exists: true }, 409);
        return;
      }
      await this.call(p, Subjects.tenantsConfigure, { settings: {} });
      res.redirect(303, `/t/${encodeURIComponent(p.tenantId)}/settings`);
    } catch (error) {
      if (!(error instanceof ContractError)) this.log.error('console page failed', { view: 'tenants.njk', error });
      this.views.error(res, error, context);
    }
  }

  /**
   * The overview: sign-ins per minute over the last hour, outcomes per hour and the method mix
   * over the last day, fraud alerts and blocks of the last 30 days. Three report queries in
   * parallel, each bounded.
   */
  @Get('t/:tenant/overview')
  async overview(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    await this.run(p, 'overview.njk', 'overview', async () => {
      const now = Date.now();
      const minute = 60_000;
      const hour = 60 * minute;
      const nextMinute = new Date(Math.floor(now / minute) * minute + minute).toISOString();
      const nextHour = new Date(Math.floor(now / hour) * hour + hour).toISOString();
      const since30d = new Date(now - 30 * 24 * hour).toISOString();
      const [perMinute, perHour, alerts, blocks] = await Promise.all([
        this.call<UsageQueryReply>(p, Subjects.reportsUsageQuery, { granularity: 'minute', from: new Date(Date.parse(nextMinute) - 60 * minute).toISOString(), to: nextMinute, limit: 60 }),
        this.call<UsageQueryReply>(p, Subjects.reportsUsageQuery, { granularity: 'hour', from: new Date(Date.parse(nextHour) - 24 * hour).toISOString(), to: nextHour, limit: 24 }),
        this.call<FraudQueryReply>(p, Subjects.reportsFraudQuery, { from: since30d, limit: 500 }),
        this.call<BlockedQueryReply>(p, Subjects.reportsBlockedQuery, { from: since30d, action: 'block', limit: 500 }),
      ]);
      const day = perHour.items.reduce((t, i) => ({ success: t.success + i.authentications.success, failure: t.failure + i.authentications.failure }), { success: 0, failure: 0 });
      const methods = new Map<string, number>();
      for (const item of perHour.items) for (const m of item.byMethod) methods.set(m.method, (methods.get(m.method) ?? 0) + m.success + m.failure);
      return {
        kpis: {
          signins24h: day.success + day.failure,
          successRate: day.success + day.failure > 0 ? Math.round((1000 * day.success) / (day.success + day.failure)) / 10 : null,
          alerts30d: alerts.items.length + (alerts.nextCursor ? '+' : ''),
          blocks30d: blocks.items.length + (blocks.nextCursor ? '+' : ''),
          enabledUsers: perHour.items.at(-1)?.enabledUsers ?? 0,
        },
        charts: {
          perMinute: { labels: perMinute.items.map((i) => i.period.slice(11, 16)), success: perMinute.items.map((i) => i.authentications.success), failure: perMinute.items.map((i) => i.authentications.failure) },
          perHour: { labels: perHour.items.map((i) => i.period.slice(11, 16)), success: perHour.items.map((i) => i.authentications.success), failure: perHour.items.map((i) => i.authentications.failure) },
          methods: { labels: [...methods.keys()], values: [...methods.values()] },
          alerts: alerts.items.slice(0, 10),
        },
      };
    });
  }

  @Get('t/:tenant/signins')
  async signins(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    let filters: Record<string, unknown>;
    try {
      const [userId, from, to] = [userIdOf(q.userId), isoDate('from', q.from), isoDate('to', q.to)];
      filters = {
        ...(userId ? { userId } : {}),
        ...(q.result === 'success' || q.result === 'failure' ? { result: q.result } : {}),
        ...(q.via === 'nats' || q.via === 'radius' ? { via: q.via } : {}),
        ...(from ? { from } : {}),
        ...(to ? { to } : {}),
      };
    } catch (error) {
      // Refused, never left out: the rows (or the CSV) would not be the ones the boxes ask for.
      if (q.format === 'csv') return this.views.error(res, error, this.chrome(req, tenant));
      const typed = { userId: typeof q.userId === 'string' ? q.userId : undefined, result: q.result, via: q.via, from: text(q.from), to: text(q.to) };
      return this.views.send(res, 'signins.njk', { ...this.chrome(req, tenant), active: 'signins', filters: typed, problem: (error as ContractError).message }, 400);
    }
    if (q.format === 'csv') return this.csv(p, CSV_REPORTS.signins, filters);
    await this.run(p, 'signins.njk', 'signins', async () => {
      const reply = await this.call<SigninsQueryReply>(p, Subjects.reportsSigninsQuery, { ...filters, limit: 50, ...cursorOf(q) });
      return { filters: { ...filters, from: text(q.from), to: text(q.to) }, items: reply.items, nextCursor: reply.nextCursor, query: new URLSearchParams(filters as Record<string, string>).toString() };
    });
  }

  /**
   * A report's CSV: every row the filters select (at most CSV_MAX_ROWS), read page by page, each
   * page only once the browser has taken the one before, and none once it has gone.
   */
  private async csv<T>(p: Page, report: CsvReport<T>, filters: Record<string, unknown>): Promise<void> {
    type Reply = { items: T[]; nextCursor?: string };
    try {
      let rows = 0;
      const first = await this.call<Reply>(p, report.subject, { ...filters, limit: 500 });
      p.res.status(200).type('text/csv; charset=utf-8').setHeader('Content-Disposition', `attachment; filename="${report.name}-${p.tenantId.replace(/[^A-Za-z0-9_.-]/g, '_')}.csv"`);
      if (!(await sent(p.res, csvText([report.columns.map(([heading]) => heading)])))) return;
      for (let reply = first; ; ) {
        if (!(await sent(p.res, csvText(reply.items.map((item) => report.columns.map(([, cell]) => cell(item))))))) return;
        rows += reply.items.length;
        const cursor = reply.nextCursor;
        if (!cursor || rows >= CSV_MAX_ROWS) break;
        reply = await this.call<Reply>(p, report.subject, { ...filters, limit: 500, cursor });
      }
      p.res.end();
    } catch (error) {
      if (p.res.headersSent) {
        // Aborted, not ended: an ended response would be saved as a whole file that is not.
        this.log.error('CSV export cut short', { error });
        p.res.destroy();
        return;
      }
      this.views.error(p.res, error, this.chrome(p.req, p.tenantId));
    }
  }

  @Get('t/:tenant/signins/:challengeId')
  async signin(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Param('challengeId') challengeId: string): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    await this.run(p, 'signin.njk', 'signins', async () => {
      const reply = await this.call<SigninsQueryReply>(p, Subjects.reportsSigninsQuery, { challengeId: challengeId.slice(0, 128), limit: 1 });
      const item = reply.items[0];
      if (!item) throw new ContractError('not_found', 'no such sign-in in this tenant’s report');
      return { item };
    });
  }

  @Get('t/:tenant/users')
  async users(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    await this.run(p, 'users.njk', 'users', async () => {
      const id = userIdOf(q.userId);
      if (!id) {
        // The search: a prefix of user id, name or phone; blocked users only if asked; users who
        // have a method (or none) if one is chosen (one the list does not offer is no filter).
        const query = text(q.q);
        const blocked = q.blocked === 'yes' ? true : undefined;
        const method = UsersListMethod.options.find((m) => m === q.method);
        const found = await this.call<UsersListReply>(p, Subjects.usersList, {
          ...(query ? { query } : {}),
          ...(blocked !== undefined ? { blocked } : {}),
          ...(method ? { method } : {}),
          limit: 50,
          ...cursorOf(q),
        });
        const params = new URLSearchParams({ ...(query ? { q: query } : {}), ...(method ? { method } : {}), ...(blocked ? { blocked: 'yes' } : {}) }).toString();
        return { search: { q: query, blocked: blocked === true, method }, found: found.items, nextCursor: found.nextCursor, params };
      }
      return this.userView(p, id);
    });
  }

  /**
   * A report page's filters from its query string: the user, the period (`from`, `to`), the
   * page's choices (a value outside them is none) and free text (sent as typed, for the contract
   * to judge). An unreadable date answers the page, 400, with the filters as typed and why: a
   * filter left out would list rows the boxes seem to exclude. `query` is the request's, `shown`
   * what the boxes show, `link` what a next-page link carries.
   */
  private reportFilters(
    p: Page,
    view: string,
    active: string,
    q: Record<string, unknown>,
    choices: Record<string, readonly string[]>,
    texts: readonly string[] = [],
  ): { query: Record<string, string>; shown: Record<string, unknown>; link: string } | undefined {
    const typed = (name: string) => (typeof q[name] === 'string' && q[name].trim() !== '' ? q[name] : undefined);
    const shown: Record<string, unknown> = { userId: typed('userId'), from: text(q.from), to: text(q.to) };
    const query: Record<string, string> = {};
    for (const [name, allowed] of Object.entries(choices)) {
      const value = typed(name);
      if (value !== undefined && allowed.includes(value)) query[name] = shown[name] = value;
    }
    for (const name of texts) {
      const value = typed(name)?.trim();
      if (value !== undefined) query[name] = shown[name] = value;
    }
    try {
      const [userId, from, to] = [userIdOf(q.userId), isoDate('from', q.from), isoDate('to', q.to)];
      if (userId) query.userId = userId;
      if (from) query.from = from;
      if (to) query.to = to;
    } catch (error) {
      // Refused, never left out: the rows (or the CSV) would not be the ones the boxes ask for.
      if (q.format === 'csv') {
        this.views.error(p.res, error, this.chrome(p.req, p.tenantId));
        return undefined;
      }
      // The choices of the fraud and blocked pages' filters, for the boxes shown again.
      this.views.send(p.res, view, { ...this.chrome(p.req, p.tenantId), active, filters: shown, sources: FRAUD_SOURCES, actions: BLOCK_ACTIONS, problem: (error as ContractError).message }, 400);
      return undefined;
    }
    return { query, shown, link: new URLSearchParams(query).toString() };
  }

  /** One user's page: the user and their block history. */
  private async userView(p: Page, userId: string) {
    const [user, history] = await Promise.all([
      this.call<UsersGetReply>(p, Subjects.usersGet, { userId }),
      this.call<BlockedQueryReply>(p, Subjects.reportsBlockedQuery, { userId, limit: 20 }),
    ]);
    return { userId, user, history: history.items };
  }

  /** The blocked page: the history (a page of it, filtered) and the addresses locked now. */
  private async blockedView(p: Page, filters: Record<string, unknown>) {
    const [history, ips] = await Promise.all([
      this.call<BlockedQueryReply>(p, Subjects.reportsBlockedQuery, { limit: 50, ...filters }),
      this.call<FraudIpsListReply>(p, Subjects.fraudIpsList, {}),
    ]);
    return { items: history.items, nextCursor: history.nextCursor, ips: ips.items, actions: BLOCK_ACTIONS };
  }

  @Post('t/:tenant/users/:action')
  async userAction(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Param('action') action: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    const reason = typeof body.reason === 'string' ? body.reason : '';
    // One browser, or every one of the user (the page's "Forget every browser" sends none).
    const rememberId = text(body.rememberId, 128);
    // One app password (a row's Delete), or every one of the user ("Delete all" sends none).
    const appPasswordId = text(body.appPasswordId, 128);
    // Each action's request is the user id and these.
    const actions: Record<string, { subject: string; body: Record<string, unknown>; notice: string }> = {
      block: { subject: Subjects.usersBlock, body: { reason }, notice: 'The user is blocked.' },
      unblock: { subject: Subjects.usersUnblock, body: { reason }, notice: 'The user is unblocked.' },
      reset: { subject: Subjects.usersReset, body: {}, notice: 'Every method of the user is cleared: they must register again.' },
      'delete-token': { subject: Subjects.usersTokensDelete, body: { tokenId: text(body.tokenId, 128) ?? '' }, notice: 'The token is deleted.' },
      'revoke-remembered': {
        subject: Subjects.usersRememberedRevoke,
        body: rememberId ? { rememberId } : {},
        notice: rememberId ? 'The browser is forgotten: its next sign-in asks for MFA.' : 'Every remembered browser of the user is forgotten: their next sign-in asks for MFA.',
      },
      'set-pin': { subject: Subjects.usersPinSet, body: { pin: text(body.pin, 16) ?? '' }, notice: 'The voice PIN is set.' },
      'delete-app-passwords': {
        subject: Subjects.usersAppPasswordsDelete,
        body: appPasswordId ? { appPasswordId } : {},
        notice: appPasswordId ? 'The app password is deleted: the client that used it can no longer sign in with it.' : 'Every app password of the user is deleted.',
      },
      'default-method': { subject: Subjects.usersMethodsDefault, body: { method: text(body.method, 16) ?? '' }, notice: 'The default method is changed.' },
      'delete-device': { subject: Subjects.usersDevicesDelete, body: { deviceId: text(body.deviceId, 128) ?? '' }, notice: 'The authenticator app is revoked: it can no longer answer sign-ins.' },
      'push-enroll': { subject: Subjects.usersPushEnroll, body: {}, notice: 'An activation code is ready: the user scans it with the authenticator app.' },
      'totp-enroll': {
        subject: Subjects.totpEnroll,
        body: text(body.label, 64) ? { label: text(body.label, 64) } : {},
        notice: 'A code app is ready to add: the user scans the code with it, then enters the code it shows.',
      },
      'create-app-password': {
        subject: Subjects.usersAppPasswordsCreate,
        body: text(body.name, 64) ? { name: text(body.name, 64) } : {},
        notice: 'The app password is created. Give it to the user now: it is shown only this once.',
      },
    };
    await this.run(p, 'users.njk', 'users', async () => {
      if (action === 'register') {
        // A new user, or a profile changed: the fields filled in (an empty one keeps its value).
        const userId = userIdOf(body.userId) ?? '';
        const profile = Object.fromEntries(PROFILE_FIELDS.flatMap((f) => (typeof body[f] === 'string' && body[f].trim() !== '' ? [[f, body[f].trim()]] : [])));
        // The form for a new user changes no existing one (its phone is a factor): that is the profile form's work.
        if (body.new === '1' && userId !== '') {
          const existing = await this.call<UsersGetReply>(p, Subjects.usersGet, { userId }).catch((error: unknown) => {
            if (error instanceof ContractError && error.code === 'not_found') return undefined;
            throw error;
          });
          if (existing) return { ...(await this.userView(p, userId)), problem: `${userId} is registered already: nothing was changed. Edit the profile below.` };
        }
        await this.call(p, Subjects.usersRegister, { userId, ...profile });
        return { ...(await this.userView(p, userId)), notice: 'The user is saved.' };
      }
      if (action === 'totp-activate') {
        // The code the user's app shows for the token just enrolled on this page.
        const userId = userIdOf(body.userId) ?? '';
        const reply = await this.call<TotpActivateReply>(p, Subjects.totpActivate, { userId, tokenId: text(body.tokenId, 128) ?? '', code: text(body.code, 16) ?? '' });
        if (!reply.active) return { ...(await this.userView(p, userId)), problem: 'That is not the code the token shows now: it stays pending. Enter the code it shows next.' };
        return { ...(await this.userView(p, userId)), notice: 'The token is active: the user signs in with its codes.' };
      }
      if (action === 'delete') {
        // Erasure cannot be undone: the operator types the user id again.
        const userId = userIdOf(body.userId) ?? '';
        if (body.confirm !== userId) throw new ContractError('invalid_request', 'the user is not erased: type the user id exactly to confirm');
        await this.call(p, Subjects.usersDelete, { userId });
        return { search: { q: undefined, blocked: false }, notice: `${userId} is erased: their personal data no longer opens anywhere, and the report keeps only a pseudonym.` };
      }
      const chosen = Object.hasOwn(actions, action) ? actions[action] : undefined;
      if (!chosen) throw new ContractError('not_found', 'no such action');
      const userId = userIdOf(body.userId) ?? '';
      const done = await this.call<Record<string, unknown>>(p, chosen.subject, { userId, ...chosen.body });
      const shown =
        action === 'push-enroll'
          ? { enrolment: done }
          : action === 'totp-enroll'
            ? { totpEnrolment: { ...done, qrCode: await QRCode.toDataURL(String(done.otpauthUri), { errorCorrectionLevel: 'M', margin: 1, width: 256 }) } }
            : action === 'create-app-password'
              ? { appPassword: done }
              : {};
      return { ...(await this.userView(p, userId)), notice: chosen.notice, ...shown };
    });
  }

  @Get('t/:tenant/fraud')
  async fraud(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    const filters = this.reportFilters(p, 'fraud.njk', 'fraud', q, { source: FRAUD_SOURCES });
    if (!filters) return;
    if (q.format === 'csv') return this.csv(p, CSV_REPORTS.fraud, filters.query);
    await this.run(p, 'fraud.njk', 'fraud', async () => {
      const reply = await this.call<FraudQueryReply>(p, Subjects.reportsFraudQuery, { ...filters.query, limit: 50, ...cursorOf(q) });
      return { filters: filters.shown, query: filters.link, items: reply.items, nextCursor: reply.nextCursor, sources: FRAUD_SOURCES };
    });
  }

  @Get('t/:tenant/blocked')
  async blocked(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    const filters = this.reportFilters(p, 'blocked.njk', 'blocked', q, { action: BLOCK_ACTIONS }, ['ip']);
    if (!filters) return;
    // The history, as the page's second table lists it.
    if (q.format === 'csv') return this.csv(p, CSV_REPORTS.blocked, filters.query);
    await this.run(p, 'blocked.njk', 'blocked', async () => ({ ...(await this.blockedView(p, { ...filters.query, ...cursorOf(q) })), filters: filters.shown, query: filters.link }));
  }

  @Post('t/:tenant/ips/unlock')
  async unlockIp(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'blocked.njk', 'blocked', async () => {
      await this.call(p, Subjects.fraudIpsUnlock, { ip: text(body.ip, 64) ?? '', reason: typeof body.reason === 'string' ? body.reason : '' });
      return { ...(await this.blockedView(p, {})), notice: 'The address is unlocked.' };
    });
  }

  /**
   * Usage for billing: per month or per day (UTC) from `from` to `to` (exclusive), by default the
   * last 12 months; `?format=csv` downloads the same figures. The period is judged by the contract's
   * own UsageQueryRequest (from before to, at most MAX_USAGE_SPAN_MS): refused on the page, 400, as
   * the report pages refuse an unreadable date, and nothing is asked.
   */
  @Get('t/:tenant/usage')
  async usage(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    const now = new Date();
    const shown = {
      from: text(q.from) ?? new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 11, 1)).toISOString().slice(0, 10),
      to: text(q.to) ?? new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString().slice(0, 10),
      granularity: text(q.granularity) ?? 'month',
    };
    let query: { from: string; to: string; granularity: string };
    try {
      if (!(USAGE_PAGE_GRANULARITIES as readonly string[]).includes(shown.granularity)) throw new ContractError('invalid_request', 'granularity: choose month or day');
      query = { from: isoDate('from', shown.from)!, to: isoDate('to', shown.to)!, granularity: shown.granularity };
      const judged = UsageQueryRequest.safeParse({ tenantId: p.tenantId, ...query });
      if (!judged.success) {
        const issue = judged.error.issues[0]!;
        const field = issue.path.join('.');
        throw new ContractError('invalid_request', issue.message.startsWith(field) ? issue.message : `${field}: ${issue.message}`);
      }
    } catch (error) {
      if (q.format === 'csv') return this.views.error(res, error, this.chrome(req, tenant));
      return this.views.send(res, 'usage.njk', { ...this.chrome(req, tenant), active: 'usage', filters: shown, granularities: USAGE_PAGE_GRANULARITIES, problem: (error as ContractError).message }, 400);
    }
    if (q.format === 'csv') return this.csv(p, CSV_REPORTS.usage, query);
    await this.run(p, 'usage.njk', 'usage', async () => {
      // Every row of the period on the page (at most 731 days: two pages of 500).
      const items: UsageItem[] = [];
      for (let cursor: string | undefined, first = true; first || cursor; first = false) {
        const reply = await this.call<UsageQueryReply>(p, Subjects.reportsUsageQuery, { ...query, limit: 500, ...(cursor ? { cursor } : {}) });
        items.push(...reply.items);
        cursor = reply.nextCursor;
      }
      return { items: items.reverse(), filters: shown, granularities: USAGE_PAGE_GRANULARITIES, query: new URLSearchParams(shown).toString() };
    });
  }

  @Get('t/:tenant/settings')
  async settings(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    await this.run(p, 'settings.njk', 'settings', () => this.settingsView(p));
  }

  private async settingsView(p: Page): Promise<Record<string, unknown>> {
    const reply = await this.call<TenantsGetReply>(p, Subjects.tenantsGet, {});
    const values = formValues(reply.settings);
    return { fields: SETTING_FIELDS, values, shown: shownToken(values) };
  }

  /**
   * Offboards the tenant (platform operators only, from the settings page's danger section; the
   * platform key is the only one tenants.delete takes): the operator types the tenant id again.
   * The answer is the tenants page with the deletion's state, never the tenant's pages: from the
   * first reply the tenant is unknown to every request. Its state is asked again only when the
   * operator asks for it (tenantDeletion).
   */
  @Post('t/:tenant/delete')
  async deleteTenant(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    const context = { ...this.chrome(req, tenant), active: 'settings' };
    try {
      if (!req.access?.platform) throw new ContractError('forbidden', 'only a platform operator deletes tenants');
      if (body.confirm !== tenant) {
        // Nothing is asked of tenants.delete: the settings page again, with why.
        this.views.send(res, 'settings.njk', { ...context, ...(await this.settingsView(p)), problem: 'the tenant is not deleted: type the tenant id exactly to confirm' }, 400);
        return;
      }
      const deletion = await this.call<TenantsDeleteReply>(p, Subjects.tenantsDelete, {});
      this.views.send(res, 'tenants.njk', { ...this.chrome(req), active: 'tenants', deletion, notice: deletionNotice(deletion) });
    } catch (error) {
      if (!(error instanceof ContractError)) this.log.error('console page failed', { view: 'settings.njk', error });
      this.views.error(res, error, context);
    }
  }

  /**
   * Where the offboarding of a tenant stands (the tenants page's "Check the state", an explicit
   * action of a platform operator): tenants.delete sent again, which only reports once the tenant is
   * deleting or deleted. A tenant that exists (never deleted, or created again since) is not
   * deleted from here: that takes its settings page and the typed confirmation.
   */
  @Post('tenants/deletion')
  async tenantDeletion(@Req() req: WebRequest, @Res() res: Response, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, typeof body.tenantId === 'string' ? body.tenantId.trim() : '', true);
    if (!p) return;
    const context = { ...this.chrome(req), active: 'tenants' };
    try {
      if (!req.access?.platform) throw new ContractError('forbidden', 'only a platform operator follows the deletion of a tenant');
      const live = await this.call<TenantsGetReply>(p, Subjects.tenantsGet, {}).then(
        () => true,
        (error: unknown) => {
          if (error instanceof ContractError && error.code === 'not_found') return false;
          throw error;
        },
      );
      if (live) {
        this.views.send(res, 'tenants.njk', { ...context, created: p.tenantId, exists: true, problem: `${p.tenantId} is a tenant in use, not one being deleted: nothing was changed. A tenant is deleted from its settings page.` }, 409);
        return;
      }
      const deletion = await this.call<TenantsDeleteReply>(p, Subjects.tenantsDelete, {});
      this.views.send(res, 'tenants.njk', { ...context, deletion, notice: deletionNotice(deletion) });
    } catch (error) {
      if (!(error instanceof ContractError)) this.log.error('console page failed', { view: 'tenants.njk', error });
      this.views.error(res, error, context);
    }
  }

  @Post('t/:tenant/settings')
  async saveSettings(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    const context = { ...this.chrome(req, tenant), active: 'settings', fields: SETTING_FIELDS };
    try {
      const patch = patchFromForm(body);
      // Only what the operator changed, against what the page showed them (else against the
      // settings now): a stored value the rules of today refuse blocks only its own change, and a
      // change made meanwhile elsewhere is not undone by a field left as it was shown.
      const shown = shownSettings(body._shown);
      // Read first whatever the form carries: tenants.configure, asked with the platform key,
      // creates a tenant that does not exist, and a settings save creates none (only a platform
      // operator creates tenants, on the tenants page). A tenant admin's role may name one that
      // does not exist: not_found.
      const current = await this.call<TenantsGetReply>(p, Subjects.tenantsGet, {});
      const settings = changedSettings(patch, shown ?? current.settings);
      const reply = Object.keys(settings).length === 0 ? current : await this.call<TenantsGetReply>(p, Subjects.tenantsConfigure, { settings });
      const values = formValues(reply.settings);
      const notice = Object.keys(settings).length === 0 ? 'Nothing changed.' : 'Settings saved. They apply to challenges started from now on.';
      this.views.send(res, 'settings.njk', { ...context, values, shown: shownToken(values), notice });
    } catch (error) {
      // No such tenant: its error page, not the form.
      if (!(error instanceof ContractError || error instanceof FormError) || (error instanceof ContractError && error.code === 'not_found')) {
        this.views.error(res, error, context);
        return;
      }
      // The form as the operator filled it, with what was refused.
      const values = Object.fromEntries(SETTING_FIELDS.map((f) => [f.path, f.kind === 'bool' ? body[f.path] === 'on' : String(body[f.path] ?? '')]));
      // Still compared, at the next save, with what the page first showed.
      const shown = typeof body._shown === 'string' && shownSettings(body._shown) ? body._shown : undefined;
      this.views.send(res, 'settings.njk', { ...context, values, shown, problem: error.message }, 400);
    }
  }

  @Get('t/:tenant/voice')
  async voice(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    await this.run(p, 'voice.njk', 'voice', () => this.voiceView(p));
  }

  private async voiceView(p: Page): Promise<Record<string, unknown>> {
    const reply = await this.call<VoiceMessagesListReply>(p, Subjects.voiceMessagesList, {});
    return { recordings: reply.messages, types: VOICE_MESSAGE_TYPES, maxBytes: MAX_VOICE_MESSAGE_BYTES };
  }

  /**
   * An upload from the page's script: the file as the request body (at most 1 MB: the body parser
   * refuses more with 413), its type and language in the query, the CSRF token in a header. Answered
   * in JSON for the script to show.
   */
  @Post('t/:tenant/voice/upload')
  async uploadRecording(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    const bytes = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    try {
      if (bytes.length === 0) throw new ContractError('invalid_request', 'choose a .wav or .mp3 file');
      const object = await this.api.putUpload(tenant, bytes);
      const saved = await this.call<VoiceMessagesUploadReply>(p, Subjects.voiceMessagesUpload, { type: text(q.type, 64) ?? '', language: text(q.language, 8) ?? '', object });
      res.status(200).json(saved);
    } catch (error) {
      if (!(error instanceof ContractError)) this.log.error('recording upload failed', { error });
      const code = error instanceof ContractError ? error.code : 'internal';
      res.status(code === 'invalid_request' ? 400 : code === 'unavailable' ? 503 : 500).json({ error: { code, message: error instanceof ContractError ? error.message : 'something went wrong; the console logged it' } });
    }
  }

  /** The tenant's recording, to play it back on the page. */
  @Get('t/:tenant/voice/play/:type/:language')
  async playRecording(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Param('type') type: string, @Param('language') language: string): Promise<void> {
    if (!this.page(req, res, tenant)) return;
    const parsed = VoiceMessageType.safeParse(type);
    const found = parsed.success && /^[a-z]{2,3}$/.test(language) ? await this.api.recording(tenant, parsed.data, language).catch(() => undefined) : undefined;
    if (!found) {
      res.status(404).type('text/plain').send('no such recording');
      return;
    }
    res.status(200).set({ 'Content-Type': found.contentType, 'Content-Length': String(found.size) });
    found.body.on('error', () => res.destroy());
    found.body.pipe(res);
  }

  @Post('t/:tenant/voice/delete')
  async deleteRecording(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'voice.njk', 'voice', async () => {
      await this.call(p, Subjects.voiceMessagesDelete, { type: text(body.type, 64) ?? '', language: text(body.language, 8) ?? '' });
      return { ...(await this.voiceView(p)), notice: 'The recording is deleted: calls speak the default message again.' };
    });
  }

  // ---- hardware OATH tokens ---------------------------------------------------------------------

  /** The inventory: a page of the tenant's tokens (one state, or all), in the service's order. */
  @Get('t/:tenant/oath')
  async oathTokens(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    await this.run(p, 'oath.njk', 'oath', () => this.oathView(p, stateOf(q.state), cursorOf(q)));
  }

  private async oathView(p: Page, state: OathTokenState | undefined, cursor: { cursor?: string | undefined }): Promise<Record<string, unknown>> {
    const reply = await this.call<OathTokensListReply>(p, Subjects.oathTokensList, { ...(state ? { state } : {}), limit: 50, ...cursor });
    return { items: reply.items, nextCursor: reply.nextCursor, state, states: OATH_TOKEN_STATES, params: new URLSearchParams(state ? { state } : {}).toString(), paged: cursor.cursor !== undefined };
  }

  /** Gives an unassigned token to a user (who then activates it with its first code). */
  @Post('t/:tenant/oath/assign')
  async assignOathToken(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'oath.njk', 'oath', async () => {
      const serialNumber = text(body.serialNumber, 64) ?? '';
      const userId = userIdOf(body.userId) ?? '';
      await this.call(p, Subjects.oathTokensAssign, { serialNumber, userId });
      return { ...(await this.oathView(p, stateOf(body.filter), {})), notice: `Token ${serialNumber} is assigned to ${userId}: it becomes a sign-in method once activated with the code it shows.` };
    });
  }

  /** Activates an assigned token with the code it shows now: from then on the user signs in with it. */
  @Post('t/:tenant/oath/activate')
  async activateOathToken(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'oath.njk', 'oath', async () => {
      const serialNumber = text(body.serialNumber, 64) ?? '';
      const reply = await this.call<OathTokensActivateReply>(p, Subjects.oathTokensActivate, { serialNumber, code: text(body.code, 16)?.replace(/\s+/g, '') ?? '' });
      const view = await this.oathView(p, stateOf(body.filter), {});
      return reply.active
        ? { ...view, notice: `Token ${serialNumber} is active: ${reply.userId} signs in with its codes.` }
        : { ...view, problem: `That is not the code token ${serialNumber} shows now: nothing changed. Enter the code on its display (a fresh one if it just changed).` };
    });
  }

  /** The import form (the page's script uploads the file, then starts the job). */
  @Get('t/:tenant/oath/import')
  oathImportPage(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string): void {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    this.views.send(res, 'oath-import.njk', { ...this.chrome(req, tenant), active: 'oath', maxBytes: MAX_IMPORT_FILE_BYTES });
  }

  /**
   * A token file from the import page's script, as the request body (the CSRF token in a header):
   * streamed into MFA_IMPORTS as `<tenant>/console-<uuid>`, never kept in the console. Answers the
   * object's name in JSON; the script then starts the import with it. The file holds the tokens'
   * secrets: nothing of it is logged or echoed.
   */
  @Post('t/:tenant/oath/upload')
  async uploadOathFile(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    try {
      const declared = Number(req.headers['content-length'] ?? NaN);
      if (declared > MAX_IMPORT_FILE_BYTES) {
        res.setHeader('Connection', 'close');
        res.status(413).json({ error: { code: 'invalid_request', message: `the file is larger than ${MAX_IMPORT_FILE_BYTES / (1024 * 1024)} MiB` } });
        return;
      }
      if (declared === 0) throw new ContractError('invalid_request', 'choose a CSV or PSKC file');
      const tooMany = () => {
        // The file is not read: the connection closes after the answer.
        res.setHeader('Connection', 'close');
        return new ContractError(
          'rate_limited',
          `${MAX_CONSOLE_IMPORTS_PER_TENANT} token files of this tenant are waiting for their import or being imported: upload this one when an import ends (a file never imported is deleted within minutes)`,
        );
      };
      // Uploads started at once would all see the same stored files: each takes a slot first, then
      // counts the stored ones (UploadSlots says why the sum never falls short).
      const taken = this.slots ? await this.slots.take(tenant, MAX_CONSOLE_IMPORTS_PER_TENANT, Date.now()) : { slot: undefined, underWay: 1 };
      if (!taken) throw tooMany();
      const slot = taken.slot;
      try {
        if (taken.underWay - 1 + (await this.api.consoleImports(tenant)) >= MAX_CONSOLE_IMPORTS_PER_TENANT) throw tooMany();
        const { object, size } = await this.api.putImport(tenant, req, MAX_IMPORT_FILE_BYTES);
        if (size === 0) {
          await this.api.deleteImport(object);
          throw new ContractError('invalid_request', 'the file is empty');
        }
        res.status(200).json({ object, bytes: size });
      } finally {
        if (slot) await this.slots?.give(tenant, slot).catch(() => undefined);
      }
    } catch (error) {
      this.jsonError(res, error, 'token file upload failed');
    }
  }

  /**
   * Starts the import of an uploaded file (the script's second request, a form body: the PSKC
   * password or key travel only in it, and go only to oath.import). Answers the job page's address;
   * a refused import deletes the upload.
   */
  @Post('t/:tenant/oath/import')
  async startOathImport(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    const object = consoleUpload(tenant, body.object);
    try {
      if (!object) throw new ContractError('invalid_request', 'upload the file first (object: not an upload of this console)');
      const format = OathImportFormat.safeParse(body.format);
      if (!format.success) throw new ContractError('invalid_request', 'format: choose CSV or PSKC');
      const password = typeof body.password === 'string' && body.password !== '' ? body.password : undefined;
      const psk = typeof body.psk === 'string' && body.psk.trim() !== '' ? body.psk.replace(/[\s:]/g, '') : undefined;
      const reply = await this.call<OathImportReply>(p, Subjects.oathImport, {
        format: format.data,
        object,
        ...(password !== undefined ? { password } : {}),
        ...(psk !== undefined ? { psk } : {}),
        ...(body.replace === 'on' || body.replace === 'true' ? { replace: true } : {}),
      });
      res.status(200).json({ jobId: reply.jobId, location: `/t/${encodeURIComponent(tenant)}/oath/jobs/${encodeURIComponent(reply.jobId)}` });
    } catch (error) {
      // Refused: no job reads the upload. (Unanswered: a job may have started with it; it stays,
      // and user-settings deletes it soon if no job claimed it.)
      if (object && !(error instanceof ContractError && error.code === 'unavailable')) await this.api.deleteImport(object).catch(() => undefined);
      this.jsonError(res, error, 'token import failed');
    }
  }

  /**
   * An import job: its page (a progress bar the page's script refreshes while the job is queued or
   * running), or with `.json` its state for that script.
   */
  @Get('t/:tenant/oath/jobs/:job')
  async oathJob(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Param('job') job: string): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    const json = job.endsWith('.json');
    const jobId = json ? job.slice(0, -5) : job;
    if (json) {
      try {
        const status = await this.jobStatus(p, jobId);
        res.status(200).json({
          state: status.state,
          total: status.total,
          processed: status.processed,
          imported: status.imported,
          failed: status.failed,
          ...(status.reason ? { reason: status.reason } : {}),
          errors: status.errorsObject !== undefined,
          ...(status.finishedAt ? { finishedAt: status.finishedAt } : {}),
        });
      } catch (error) {
        this.jsonError(res, error, 'import job status failed');
      }
      return;
    }
    await this.run(p, 'oath-job.njk', 'oath', async () => ({ jobId, job: await this.jobStatus(p, jobId) }));
  }

  /** The whole error file of a job (rows refused, with why), from MFA_IMPORTS, as a download. */
  @Get('t/:tenant/oath/jobs/:job/errors.csv')
  async oathJobErrors(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Param('job') jobId: string): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    try {
      const status = await this.jobStatus(p, jobId);
      const object = status.errorsObject;
      const file = object && object.startsWith(`${tenant}/`) ? await this.api.importFile(object) : undefined;
      if (!file) throw new ContractError('not_found', 'this job has no error file (no row failed, or it is older than 7 days)');
      res.status(200).set({
        'Content-Type': 'text/csv; charset=utf-8',
        'Content-Length': String(file.size),
        'Content-Disposition': `attachment; filename="oath-import-errors-${jobId}.csv"`,
      });
      file.body.on('error', (error) => {
        this.log.error('error file download cut short', { error });
        res.destroy();
      });
      file.body.pipe(res);
    } catch (error) {
      if (!(error instanceof ContractError)) this.log.error('error file download failed', { error });
      this.views.error(res, error, { ...this.chrome(req, tenant), active: 'oath' });
    }
  }

  private jobStatus(p: Page, jobId: string): Promise<OathImportStatusReply> {
    if (!OathJobId.safeParse(jobId).success) return Promise.reject(new ContractError('not_found', 'unknown import job'));
    return this.call<OathImportStatusReply>(p, Subjects.oathImportStatus, { jobId });
  }

  /** A failure answered to a page script as `{error: {code, message}}`. */
  private jsonError(res: Response, error: unknown, what: string): void {
    if (!(error instanceof ContractError)) this.log.error(what, { error });
    const code = error instanceof ContractError ? error.code : 'internal';
    if (res.headersSent) return void res.end();
    res.status(STATUS_OF[code] ?? 500).json({ error: { code, message: error instanceof ContractError ? error.message : 'something went wrong; the console logged it' } });
  }

  @Get('t/:tenant/clients')
  async clients(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'clients.njk', 'clients', async () => ({ items: (await this.call<ClientsListReply>(p, Subjects.clientsList, {})).items, scopes: SCOPES }));
  }

  @Post('t/:tenant/clients')
  async createClient(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Body() body: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'clients.njk', 'clients', async () => {
      const scopes = SCOPES.filter((s) => body[`scope_${s}`] === 'on');
      const created = await this.call<ClientsCreateReply>(p, Subjects.clientsCreate, { name: typeof body.name === 'string' ? body.name : '', scopes });
      return { created, items: (await this.call<ClientsListReply>(p, Subjects.clientsList, {})).items, scopes: SCOPES };
    });
  }

  @Post('t/:tenant/clients/:clientId/revoke')
  async revokeClient(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Param('clientId') clientId: string): Promise<void> {
    const p = this.page(req, res, tenant, true);
    if (!p) return;
    await this.run(p, 'clients.njk', 'clients', async () => {
      await this.call(p, Subjects.clientsRevoke, { clientId: clientId.slice(0, 128) });
      return { notice: 'The key is revoked.', items: (await this.call<ClientsListReply>(p, Subjects.clientsList, {})).items, scopes: SCOPES };
    });
  }

  @Get('t/:tenant/audit')
  async audit(@Req() req: WebRequest, @Res() res: Response, @Param('tenant') tenant: string, @Query() q: Record<string, unknown>): Promise<void> {
    const p = this.page(req, res, tenant);
    if (!p) return;
    const filters = this.reportFilters(p, 'audit.njk', 'audit', q, {}, ['clientId', 'operator', 'subject']);
    if (!filters) return;
    // The page shows actions without the API's prefix (users.delete): the box takes them so too. An
    // action outside the API (the master key tool's mfa.tool.rewrap) is taken whole: no API subject
    // after the prefix begins with `mfa.`.
    if (filters.query.subject !== undefined && !filters.query.subject.startsWith('mfa.')) filters.query.subject = `${SUBJECT_PREFIX}${filters.query.subject}`;
    if (q.format === 'csv') return this.csv(p, CSV_REPORTS.audit, filters.query);
    await this.run(p, 'audit.njk', 'audit', async () => {
      const reply = await this.call<AuditQueryReply>(p, Subjects.reportsAuditQuery, { ...filters.query, limit: 50, ...cursorOf(q) });
      return { filters: filters.shown, query: filters.link, items: reply.items, nextCursor: reply.nextCursor };
    });
  }
}

/** What the tenants page says of a deletion's state (the page shows its figures). */
function deletionNotice(deletion: TenantsDeleteReply): string {
  return deletion.state === 'deleted'
    ? `${deletion.tenantId} is deleted: its users are erased, its hardware tokens, recordings and import files deleted (its audit trail stays). The id may be created again, as a new tenant with nothing of the old one.`
    : `${deletion.tenantId} is being deleted: it is unknown to every request and its API keys are revoked. Its users, hardware tokens, recordings and import files are being erased; check the state below to see when that is done.`;
}

/** A state filter of the inventory, or undefined for all. */
function stateOf(value: unknown): OathTokenState | undefined {
  const parsed = OathTokenState.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

