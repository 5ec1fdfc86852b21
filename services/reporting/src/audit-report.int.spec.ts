import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { AuditQueryReply, parseEvent, Subjects, type EventOf, type Operator } from '@mfa/contracts';
import { connectNats, requestJson, type NatsClients } from '@mfa/messaging';
import type { RunningService } from '@mfa/service-kit';
import { itWith, testEnv, uniqueTenant } from '@mfa/testing';
import { boot } from './boot.js';
import { loadReportingConfig } from './config.js';
import { AuditRepository } from './adapters/audit.repository.js';
import { AuditReportService } from './application/audit-report.service.js';

process.env.LOG_LEVEL ??= 'warn';

/** reports.audit.query by operator and by subject, on the real NATS and Postgres (the real migrations). */
describe('reporting: the audit trail by operator and by action (real NATS and Postgres)', () => {
  let service: RunningService;
  let audit: AuditReportService;
  let nats: NatsClients;
  let pool: pg.Pool;
  let seq = 1;

  before(async () => {
    service = await boot(loadReportingConfig({ ...process.env, NATS_URL: testEnv.natsUrl, DATABASE_URL: testEnv.databaseUrl, HTTP_PORT: '0', NODE_ENV: 'test' }));
    audit = service.app.get(AuditReportService);
    nats = await connectNats({ url: testEnv.natsUrl, name: 'reporting-audit-test' });
    pool = new pg.Pool({ connectionString: testEnv.databaseUrl, max: 2 });
  });

  after(async () => {
    await service?.stop();
    await nats?.nc.close();
    await pool?.end();
  });

  const olga: Operator = { sub: 'olga-7f3a', email: 'olga@ops.example', name: 'Olga Operator' };
  const ivan: Operator = { sub: 'ivan-19c2', name: 'Ivan' };

  /** An admin action as the audit trail records it: by the console (platform key, an operator) or by an API client. */
  const action = (tenantId: string, second: number, subject: string, by: Operator | string, userId = 'bob@contoso.com'): EventOf<'AdminActionRecorded'> =>
    parseEvent({
      id: randomUUID(),
      type: 'AdminActionRecorded',
      version: 1,
      tenantId,
      aggregateId: tenantId,
      occurredAt: new Date(Date.parse('2026-11-01T10:00:00.000Z') + second * 1000).toISOString(),
      metadata: {},
      data: typeof by === 'string' ? { subject, clientId: by, userId, outcome: 'ok' } : { subject, clientId: 'platform', operator: by, userId, outcome: 'ok' },
    }) as EventOf<'AdminActionRecorded'>;

  /** A tenant's trail: Olga and Ivan at the console, an API client, and Olga in another tenant. */
  async function trail(): Promise<string> {
    const tenantId = uniqueTenant('rep-audit-by');
    const other = uniqueTenant('rep-audit-other');
    await audit.project(
      [
        action(tenantId, 1, Subjects.usersBlock, olga),
        action(tenantId, 2, Subjects.usersDelete, ivan),
        action(tenantId, 3, Subjects.usersDelete, olga, 'carol@contoso.com'),
        action(tenantId, 4, Subjects.usersBlock, 'idp-1'),
        action(tenantId, 5, Subjects.clientsCreate, olga),
        action(other, 6, Subjects.usersDelete, olga),
      ].map((event) => ({ event, seq: seq++ })),
    );
    return tenantId;
  }

  async function query(body: Record<string, unknown>): Promise<AuditQueryReply> {
    const reply = await requestJson<AuditQueryReply & { error?: { code: string; message: string } }>(nats.nc, Subjects.reportsAuditQuery, body);
    if (reply.error) assert.fail(`query failed: ${JSON.stringify(reply.error)}`);
    return AuditQueryReply.parse(reply);
  }
  const shown = (reply: AuditQueryReply) => reply.items.map((i) => [i.operator?.sub ?? i.clientId, i.subject.replace('mfa.v1.', ''), i.userId]);

  itWith({ real: ['nats', 'postgres'] }, "lists what one operator did, by the sub their items carry, newest first, page after page; a name or e-mail is not the operator's identity", async () => {
    const tenantId = await trail();
    assert.deepEqual(shown(await query({ tenantId, operator: olga.sub })), [
      [olga.sub, 'clients.create', 'bob@contoso.com'],
      [olga.sub, 'users.delete', 'carol@contoso.com'],
      [olga.sub, 'users.block', 'bob@contoso.com'],
    ]);
    // The cursor keeps to the filter.
    const first = await query({ tenantId, operator: olga.sub, limit: 2 });
    assert.equal(first.items.length, 2);
    assert.ok(first.nextCursor);
    assert.deepEqual(shown(await query({ tenantId, operator: olga.sub, limit: 2, cursor: first.nextCursor })), [[olga.sub, 'users.block', 'bob@contoso.com']]);
    assert.deepEqual((await query({ tenantId, operator: olga.name })).items, []);
    assert.deepEqual((await query({ tenantId, operator: olga.email })).items, []);
    // The API client's action names no operator: it is found by its clientId, as before.
    assert.deepEqual(shown(await query({ tenantId, clientId: 'idp-1' })), [['idp-1', 'users.block', 'bob@contoso.com']]);
  });

  itWith({ real: ['nats', 'postgres'] }, 'lists every action of one subject, matched exactly, alone or with the other filters', async () => {
    const tenantId = await trail();
    assert.deepEqual(shown(await query({ tenantId, subject: Subjects.usersDelete })), [
      [olga.sub, 'users.delete', 'carol@contoso.com'],
      [ivan.sub, 'users.delete', 'bob@contoso.com'],
    ]);
    assert.deepEqual(shown(await query({ tenantId, subject: Subjects.usersDelete, operator: ivan.sub })), [[ivan.sub, 'users.delete', 'bob@contoso.com']]);
    assert.deepEqual(shown(await query({ tenantId, subject: Subjects.usersBlock, userId: 'bob@contoso.com', to: '2026-11-01T10:00:02Z' })), [[olga.sub, 'users.block', 'bob@contoso.com']]);
    // Exact: neither a prefix nor the subject without its version.
    assert.deepEqual((await query({ tenantId, subject: 'mfa.v1.users' })).items, []);
    assert.deepEqual((await query({ tenantId, subject: 'users.delete' })).items, []);
  });

  itWith({ real: ['nats', 'postgres'] }, 'refuses an operator or subject the trail could not hold, as invalid_request naming the field', async () => {
    const tenantId = uniqueTenant('rep-audit-refused');
    const refused: Array<[string, unknown]> = [
      ['operator', ''],
      ['operator', 'o'.repeat(257)],
      ['operator', 'olga\u0007'],
      ['operator', 'olga\u202e'],
      ['operator', 7],
      ['subject', ''],
      ['subject', `mfa.v1.${'x'.repeat(122)}`],
      ['subject', 'mfa.v1.users.*'],
      ['subject', 'mfa.v1.>'],
      ['subject', 'mfa.v1..users'],
      ['subject', 'mfa.v1.users delete'],
      ['subject', 'mfa.v1.users.delete\n'],
    ];
    for (const [field, value] of refused) {
      const reply = await requestJson<{ error?: { code: string; message: string } }>(nats.nc, Subjects.reportsAuditQuery, { tenantId, [field]: value });
      assert.equal(reply.error?.code, 'invalid_request', `${field}: ${JSON.stringify(value)}`);
      assert.match(reply.error?.message ?? '', new RegExp(field), `${field}: ${JSON.stringify(value)}`);
    }
    // The longest subject and operator the trail holds are accepted.
    assert.deepEqual((await query({ tenantId, subject: `mfa.v1.${'x'.repeat(121)}`, operator: 'o'.repeat(256) })).items, []);
  });

  itWith({ real: ['nats', 'postgres'] }, 'each filter is served by its index, not by reading the tenant’s whole trail', async () => {
    const tenantId = await trail();
    // A tenant whose trail is mostly other actions, and statistics that know it: the planner then
    // weighs a scan of the whole trail against the filter's index as it would in production.
    const others = Array.from({ length: 300 }, (_, n) => action(tenantId, 10 + n, n % 2 ? Subjects.usersUnblock : Subjects.tenantsConfigure, n % 3 ? 'idp-1' : ivan));
    await audit.project(others.map((event) => ({ event, seq: seq++ })));
    await pool.query('ANALYZE audit_log');
    // The statements the repository sends, run on the real pool and kept to be explained.
    const sent: Array<{ sql: string; params: unknown[] }> = [];
    const recording = { query: (sql: string, params: unknown[]) => (sent.push({ sql, params }), pool.query(sql, params)) } as unknown as pg.Pool;
    const repository = new AuditRepository(pool, recording);
    await repository.find({ tenantId, operator: olga.sub, limit: 51 });
    await repository.find({ tenantId, subject: Subjects.usersDelete, limit: 51 });
    const client = await pool.connect();
    try {
      // A small table: a sequential scan may still be cheapest; the question is which index matches.
      await client.query('BEGIN');
      await client.query('SET LOCAL enable_seqscan = off');
      const plans: string[] = [];
      for (const { sql, params } of sent) plans.push(JSON.stringify((await client.query(`EXPLAIN (FORMAT JSON) ${sql}`, params)).rows));
      assert.match(plans[0]!, /"Index Name":"audit_log_by_operator"/);
      assert.match(plans[1]!, /"Index Name":"audit_log_by_subject"/);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });
});
