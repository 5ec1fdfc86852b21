// `node bench/dist/report-volume.js [--rows 1000000] [--runs 20]` (after `npx tsc -b`): how fast the
// reports and the console answer for a tenant with a million sign-ins (issue 9: under 300 ms at the
// server for the sign-in report's first page, a filtered page and the overview). It creates a
// database of its own, lets reporting migrate it, writes the rows with one INSERT … SELECT
// (30 days of sign-ins of 10,000 users, methods and outcomes mixed, 2 % still pending), and times
// the queries through NATS and the console's overview over HTTP, from a signed-in session.
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Subjects } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { freePort, startNatsServer, startStack, testEnv } from '@mfa/testing';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '20' } } });
const rows = Number(values.rows);
const runs = Number(values.runs);
const out = (line: string) => process.stdout.write(`${line}\n`);
const admin = new pg.Client({ connectionString: new URL('/postgres', testEnv.databaseUrl).toString() });
await admin.connect();
const database = `mfa_volume_${Date.now().toString(36)}`;
const databaseUrl = new URL(`/${database}`, testEnv.databaseUrl).toString();
const nats = await startNatsServer();
const consolePort = await freePort();
const stack = await startStack({
  services: ['reporting', 'console'],
  env: { NODE_ENV: 'development', MFA_AUTH: 'off', NATS_URL: nats.url, DATABASE_URL: databaseUrl, REDIS_URL: testEnv.redisUrl, CONSOLE_DEV_LOGIN: 'true', LOG_LEVEL: 'warn' },
  serviceEnv: { console: { CONSOLE_PORT: String(consolePort) } },
  onLine: (service, line) => {
    if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
  },
});
const db = new pg.Client({ connectionString: databaseUrl });
await db.connect();
const nc = await connectClient({ servers: nats.url, name: 'bench-report-volume' });
const tenantId = 'volume';

try {
  out(`writing ${rows.toLocaleString('en')} sign-ins of tenant ${tenantId} …`);
  const started = performance.now();
  await db.query(`INSERT INTO tenants (tenant_id, created_at) VALUES ($1, now())`, [tenantId]);
  await db.query(
    `INSERT INTO signins (tenant_id, challenge_id, occurred_at, user_id, auth_method, result, result_detail, server_name, server_ip,
                          client_ip, application, expires_at, completed_at, context_seq, result_seq, failed_attempts, last_event_seq)
     SELECT $1, 'ch-' || n, t, 'user-' || (n % 10000) || '@volume.example',
            CASE WHEN n % 3 = 0 THEN 'sms' ELSE 'totp' END,
            CASE WHEN n % 50 = 0 THEN NULL WHEN n % 7 = 0 THEN 'failure' ELSE 'success' END,
            CASE WHEN n % 50 = 0 THEN NULL WHEN n % 7 = 0 THEN 'MFA denied; invalid verification code' ELSE 'MFA successfully completed' END,
            'mfa-1', '10.0.0.5', '198.51.100.' || (n % 250), 'VPN', t + interval '3 minutes',
            CASE WHEN n % 50 = 0 THEN NULL ELSE t + interval '20 seconds' END, n, CASE WHEN n % 50 = 0 THEN NULL ELSE n END, 0, n
       FROM (SELECT n, now() - (n * (interval '30 days' / $2::int)) AS t FROM generate_series(1, $2::int) AS n) s`,
    [tenantId, rows],
  );
  await db.query(
    `INSERT INTO user_lifetimes (tenant_id, user_key, registered_at) SELECT $1, 'key-' || n, now() - interval '60 days' FROM generate_series(1, 10000) n`,
    [tenantId],
  );
  await db.query('ANALYZE');
  out(`written in ${((performance.now() - started) / 1000).toFixed(1)} s`);

  const time = async (label: string, call: () => Promise<void>) => {
    await call(); // warm
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await call();
      samples.push(performance.now() - t);
    }
    samples.sort((a, b) => a - b);
    const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!;
    out(`${label.padEnd(58)} median ${at(0.5).toFixed(1).padStart(6)} ms   p95 ${at(0.95).toFixed(1).padStart(6)} ms   max ${samples.at(-1)!.toFixed(1).padStart(6)} ms`);
  };
  const ask = (subject: string, body: Record<string, unknown>) => async () => {
    const reply = await requestJson<{ error?: { message: string }; items?: unknown[] }>(nc, subject, { tenantId, ...body }, { timeoutMs: 30_000 });
    if (reply.error) throw new Error(`${subject}: ${reply.error.message}`);
  };
  const now = Date.now();
  const hour = 3_600_000;
  await time('reports.signins.query, first page (50)', ask(Subjects.reportsSigninsQuery, { limit: 50 }));
  await time('reports.signins.query, user + failures + 7 days (50)', ask(Subjects.reportsSigninsQuery, { userId: 'user-77@volume.example', result: 'failure', from: new Date(now - 7 * 24 * hour).toISOString(), to: new Date(now).toISOString(), limit: 50 }));
  await time('reports.signins.query, failures of the last day (50)', ask(Subjects.reportsSigninsQuery, { result: 'failure', from: new Date(now - 24 * hour).toISOString(), limit: 50 }));
  await time('reports.usage.query, last hour by minute', ask(Subjects.reportsUsageQuery, { granularity: 'minute', from: new Date(now - hour).toISOString(), to: new Date(now).toISOString(), limit: 60 }));
  await time('reports.usage.query, last 24 h by hour', ask(Subjects.reportsUsageQuery, { granularity: 'hour', from: new Date(now - 24 * hour).toISOString(), to: new Date(now).toISOString(), limit: 24 }));
  await time('reports.usage.query, 12 months by month (all rows)', ask(Subjects.reportsUsageQuery, { granularity: 'month', from: new Date(now - 365 * 24 * hour).toISOString(), to: new Date(now).toISOString(), limit: 13 }));

  // The console's pages, signed in (development sign-in), over HTTP.
  const base = `http://127.0.0.1:${consolePort}`;
  const login = await fetch(`${base}/auth/dev`, { method: 'POST', body: new URLSearchParams({ sub: 'bench', roles: 'platform-operator' }), redirect: 'manual', headers: { Origin: base } });
  const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
  const page = (path: string) => async () => {
    const res = await fetch(`${base}${path}`, { headers: { cookie }, redirect: 'manual' });
    if (res.status !== 200) throw new Error(`${path}: ${res.status} ${(await res.text()).replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").slice(0, 300)}`);
    await res.text();
  };
  await time('console: overview page', page(`/t/${tenantId}/overview`));
  await time('console: sign-ins page (first)', page(`/t/${tenantId}/signins`));
  await time('console: sign-ins page (user, failures)', page(`/t/${tenantId}/signins?userId=user-77%40volume.example&result=failure`));
} finally {
  await nc.drain();
  await db.end();
  await stack.stop();
  await nats.stop();
  await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(database)} WITH (FORCE)`);
  await admin.end();
}
