// The operator's tool after restoring the event log from a backup (docs/operations.md, "Backup
// and restore"):
//   node services/reporting/dist/reapply-erasures.js [--dry-run] [--json]
// with reporting's environment (MFA_ENCRYPTION_KEY, MFA_PREVIOUS_ENCRYPTION_KEYS, NATS_*,
// DATABASE_URL) and MFA_PLATFORM_API_KEY: deletes again (tenants.delete) every tenant the audit
// trail records as deleted whom the restored log has as it was before, erases again (users.delete) every user the report
// records as erased whom the restored log has registered, and completes the erasures the key store
// made that the log misses (users.delete with onlyIfKeyErased). Run it once user-settings has
// started. Exit code: 0 when done (a dry run: nothing needs a look), 3 when users need a look (no
// data key, a users.delete that failed or was refused: run it again), 1 on failure, 2 on a bad
// argument.
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Subjects } from '@mfa/contracts';
import { connectNats, natsSecurityFromEnv, requestJson } from '@mfa/messaging';
import { createLogger } from '@mfa/telemetry';
import { ErasureReapply, type ReapplyReport } from './application/erasure-reapply.js';
import { locatePrimary } from './adapters/primary-pool.js';
import { loadReportingConfig } from './config.js';

const log = createLogger('reporting-reapply-erasures', { level: 'warn' });

/** The report for a person: user ids, since the operator records what was erased again. */
export function formatReapplyReport(report: ReapplyReport): string {
  const ref = (u: { tenantId: string; userId: string }) => `  ${u.tenantId} ${u.userId}`;
  const failed = new Set(report.failed.map((u) => `${u.tenantId}\n${u.userId}`));
  const tenantsFailed = new Set(report.tenantsFailed.map((t) => t.tenantId));
  const lines = [
    ...(report.tenantsDeletedAgain.length > 0
      ? [
          `Tenants deleted since the backup and back in the log: ${report.tenantsDeletedAgain.length}${report.dryRun ? ' (to delete again)' : `, deleted again: ${report.tenantsDeletedAgain.filter((t) => !tenantsFailed.has(t.tenantId)).length} (their offboarding erases their users; mfa tenants delete <tenant> --yes --wait follows it)`}.`,
          ...report.tenantsDeletedAgain.map((t) => `  ${t.tenantId} (deleted ${t.deletedAt})`),
        ]
      : []),
    `${report.dryRun ? 'Dry run (nothing erased). ' : ''}Users in the event log: ${report.users}; erased there: ${report.erasedInLog}.`,
    `Erased in the report but registered in the log: ${report.erasedAgain.length}${report.dryRun ? ' (to erase again)' : `, erased again: ${report.erasedAgain.filter((u) => !failed.has(`${u.tenantId}\n${u.userId}`)).length}`}.`,
    ...report.erasedAgain.map(ref),
  ];
  if (report.keyErasuresCompleted.length > 0) {
    lines.push(
      `Erasures the key store made that the log missed (MFA_USER_KEYS newer than the log), completed: ${report.keyErasuresCompleted.length}`,
      ...report.keyErasuresCompleted.map((u) => `${ref(u)} (key generation ${u.gen})`),
    );
  }
  if (report.tenantsFailed.length > 0) lines.push(`Tenants whose tenants.delete failed or was refused (run the tool again): ${report.tenantsFailed.length}`, ...report.tenantsFailed.map((t) => `  ${t.tenantId}: ${t.error}`));
  if (report.failed.length > 0) lines.push(`Failed (a users.delete that failed or was refused, or a data key that does not read: run the tool again once fixed): ${report.failed.length}`, ...report.failed.map((u) => `${ref(u)}: ${u.error}`));
  if (report.withoutKey.length > 0) lines.push(`Users without a data key (MFA_USER_KEYS older than the log): ${report.withoutKey.length}`, ...report.withoutKey.map(ref));
  if (report.keyErasedOnly.length > 0) {
    lines.push(
      `Users whose data key is destroyed but whom the log does not erase (MFA_USER_KEYS newer than the log), erasure to complete: ${report.keyErasedOnly.length}`,
      ...report.keyErasedOnly.map((u) => `${ref(u)} (key generation ${u.gen})`),
    );
  }
  return lines.join('\n');
}

/** 3 while users need a look: what remains undone (a dry run's erasures to make are not counted); else 0. */
export function exitCodeOf(report: Pick<ReapplyReport, 'failed' | 'withoutKey' | 'tenantsFailed'>): 0 | 3 {
  return report.failed.length + report.withoutKey.length + report.tenantsFailed.length === 0 ? 0 : 3;
}

async function run(): Promise<number> {
  let args;
  try {
    args = parseArgs({ options: { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } }, strict: true }).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\nusage: reapply-erasures.js [--dry-run] [--json]\n`);
    return 2;
  }
  const dryRun = args['dry-run'] === true;
  const config = loadReportingConfig(process.env);
  const platformKey = config.auth.platformKey;
  if (!dryRun && config.auth.mode === 'required' && !platformKey) {
    process.stderr.write('MFA_PLATFORM_API_KEY is needed to call users.delete (or run with --dry-run)\n');
    return 2;
  }
  const nats = await connectNats({ url: config.NATS_URL, name: 'reporting-reapply-erasures', security: natsSecurityFromEnv(config), connectTimeoutMs: 10_000 });
  const db = new pg.Pool({ connectionString: await locatePrimary(config.DATABASE_URL), max: 2 });
  try {
    const headers: Record<string, string> = platformKey ? { Authorization: `Bearer ${platformKey}` } : {};
    const report = await new ErasureReapply(nats, config.keyring, db, {
      dryRun,
      log,
      erase: (request) => requestJson(nats.nc, Subjects.usersDelete, request, { timeoutMs: 10_000, headers }),
      deleteTenant: (request) => requestJson(nats.nc, Subjects.tenantsDelete, request, { timeoutMs: 10_000, headers }),
    }).run();
    process.stdout.write(`${args.json ? JSON.stringify(report) : formatReapplyReport(report)}\n`);
    return exitCodeOf(report);
  } finally {
    await nats.nc.drain().catch(() => undefined);
    await db.end().catch(() => undefined);
  }
}

// Only when run, not when a spec imports formatReapplyReport.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  run().then(
    (code) => process.exit(code),
    (error: unknown) => {
      // The name and message only: a cause chain could carry what a request held.
      log.error('reapply-erasures failed; run it again', { error: error instanceof Error ? { name: error.name, message: error.message } : String(error) });
      process.exit(1);
    },
  );
}
