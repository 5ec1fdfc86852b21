// The operator's tool after a master key rotation (docs/operations.md, "Rotation procedure"):
//   node services/user-settings/dist/rewrap.js [--dry-run] [--skip-event-log] [--json] [--operator <sub>]
// with user-settings' environment (MFA_ENCRYPTION_KEY, MFA_PREVIOUS_ENCRYPTION_KEYS, NATS_*).
// Moves the users' data keys to the current master key, and seals again under it the secrets still
// in use (TOTP and hardware secrets, PIN hashes, push tokens, the inventory's secrets: SecretsResealed,
// OathTokenResealed); --dry-run only reports. Run it once every service runs the release that reads
// those events (docs/operations.md, "Rotation procedure").
// A run that wrote records, for each tenant whose data it changed, one AdminActionRecorded in the
// tenant's audit trail (subject mfa.tool.rewrap, client rewrap.js, reports.audit.query), naming
// the person given by --operator (their console `sub`, e.g. an e-mail address) as its operator.
// Safe while the services run; refuses to write while a running service has another master key.
// Exit code: 0 when every previous key may be removed, 3 when something still needs one, 1 on
// failure (run it again: it resumes), 2 on a bad argument, 4 when it refused to write (the
// development key, or no running service confirms this master key).
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Operator } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import { connectNats, natsSecurityFromEnv } from '@mfa/messaging';
import { askRunningKeyrings } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import type { NatsConnection } from '@nats-io/nats-core';
import { MasterKeyRewrap, REWRAP_AUDIT_SUBJECT, type RewrapReport } from './application/master-key-rewrap.js';
import { loadUserSettingsConfig } from './config.js';

const log = createLogger('user-settings-rewrap', { level: 'warn' });

/** The report for a person: counts by key id, and a verdict per previous key. Never a key, only key ids. */
export function formatReport(report: RewrapReport): string {
  const d = report.dataKeys;
  const r = report.resealed;
  const verb = report.dryRun ? 'would be ' : '';
  const lines = [
    `${report.dryRun ? 'Dry run (nothing written). ' : ''}Current key ${report.currentKid}; previous: ${report.previousKids.join(', ') || 'none'}.`,
    `Users: ${report.users}; hardware tokens in the inventory: ${report.hardwareTokens}.`,
    `Data keys: ${d.moved} ${verb}moved and wrapped again, ${d.rewrapped} ${verb}wrapped again in place, ${d.tombstonesMoved} tombstones ${verb}moved` +
      (report.dryRun ? '.' : `, ${d.copiesRemoved} old copies deleted, ${d.conflicts} conflicting copies left, ${d.raced} changed meanwhile (left to the winner), ${d.failed} unreadable.`),
    `Secrets in use ${verb}sealed again under the current key: ${r.totpSecrets} TOTP secrets, ${r.pinHashes} PIN hashes, ${r.pushTokens} push tokens of ${r.users} users, ${r.inventorySecrets} inventory token secrets` +
      (report.dryRun ? '' : `, ${r.raced} changed meanwhile (left to the winner; run again)`) +
      `, ${r.failed} that do not open with this keyring (left as they are).`,
  ];
  if (!report.dryRun) {
    lines.push(
      `Audit trail: ${report.audit.recorded} records (${REWRAP_AUDIT_SUBJECT}), one per tenant whose data was changed` +
        (report.audit.failed > 0 ? `; ${report.audit.failed} NOT written (see the errors above).` : '.'),
    );
  }
  lines.push('', 'In use, by key id:');
  for (const [kid, n] of Object.entries(report.needs)) {
    const role = kid === report.currentKid ? 'current' : report.previousKids.includes(kid) ? 'previous' : kid === 'unreadable' ? 'not sealed values' : 'NOT IN THE KEYRING';
    lines.push(
      `  ${kid} (${role}): ${n.dataKeys} data keys, ${n.totpSecrets} TOTP secrets of users, ${n.pinHashes} PIN hashes, ${n.pushTokens} push tokens, ${n.inventorySecrets} inventory token secrets, ${n.importJobs} unfinished import jobs`,
    );
  }
  if (Object.keys(report.eventLog).length > 0) {
    lines.push('', 'Sealed values in the event log MFA_USER_SETTINGS (immutable history, in use or not), by key id:');
    for (const [kid, count] of Object.entries(report.eventLog)) lines.push(`  ${kid}: ${count}`);
  }
  lines.push('');
  for (const kid of report.previousKids) {
    lines.push(
      report.removable.includes(kid)
        ? `${kid}: nothing in use needs it; it may be removed from MFA_PREVIOUS_ENCRYPTION_KEYS (replay reporting-erasures first, see "Removing a previous master key").`
        : `${kid}: still needed (see the counts above); keep it in MFA_PREVIOUS_ENCRYPTION_KEYS.`,
    );
  }
  return lines.join('\n');
}

/**
 * The key ids of the running services (the boot check's question, keyring-check.ts). A service on
 * another key reads users' keys under that key's tags: moving them to this key's tags would take
 * them away from it. Empty when no service runs.
 */
function runningServiceKids(nc: NatsConnection, keyring: Keyring): Promise<Array<{ kid: string; service: string }>> {
  const asker = { kid: keyring.kid, previous: keyring.previous.map((k) => k.kid), service: 'user-settings-rewrap', instance: hostname(), bootId: randomUUID() };
  return askRunningKeyrings(nc, asker, log, 500);
}

async function run(): Promise<number> {
  const usage = 'usage: rewrap.js [--dry-run] [--skip-event-log] [--json] [--no-running-services] [--operator <sub>]';
  let args;
  try {
    args = parseArgs({
      options: { 'dry-run': { type: 'boolean' }, 'skip-event-log': { type: 'boolean' }, json: { type: 'boolean' }, 'no-running-services': { type: 'boolean' }, operator: { type: 'string' } },
      strict: true,
    }).values;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n${usage}\n`);
    return 2;
  }
  // Who runs it, for the audit records: as the console names an operator (reports.audit.query's `operator`).
  let operator: Operator | undefined;
  if (args.operator !== undefined) {
    const parsed = Operator.safeParse({ sub: args.operator });
    if (!parsed.success) {
      process.stderr.write(`--operator ${parsed.error.issues[0]?.message ?? 'is not valid'}\n${usage}\n`);
      return 2;
    }
    operator = parsed.data;
  }
  const writing = args['dry-run'] !== true;
  // user-settings' own configuration, checked as the service checks it: the tool runs with its environment.
  const config = loadUserSettingsConfig(process.env);
  const { keyring, developmentKey } = config;
  if (developmentKey) {
    // Wrapping every user's key with a public key, and erasing the copies under the real one,
    // would lose every user's data to the services started later with their real key.
    if (writing) {
      process.stderr.write('MFA_ENCRYPTION_KEY is not set: the tool writes only with the master key the services run with; nothing was written.\n');
      return 4;
    }
    log.warn('MFA_ENCRYPTION_KEY is not set: using the public development key');
  }
  const nats = await connectNats({ url: config.NATS_URL, name: 'user-settings-rewrap', security: natsSecurityFromEnv(config), connectTimeoutMs: 10_000 });
  try {
    const peers = await runningServiceKids(nats.nc, keyring);
    const others = peers.filter((peer) => peer.kid !== keyring.kid);
    if (others.length > 0) {
      const text = `running services have another master key than this one (${keyring.kid}): ${others.map((p) => `${p.service} has ${p.kid}`).join(', ')}`;
      if (writing) {
        process.stderr.write(`${text}. Run the tool with the services' MFA_ENCRYPTION_KEY, once every service runs with the new key; nothing was written.\n`);
        return 4;
      }
      log.warn(text);
    }
    // A key no running service confirms may be a mistyped one: moving the keys to its tags would
    // hide them from the services. Only an operator who knows none runs may say so.
    if (writing && peers.length === 0 && args['no-running-services'] !== true) {
      process.stderr.write(`no running service answered the master key check, so none confirms this key (${keyring.kid}). Start user-settings with the new key first, or pass --no-running-services if you know the key is right; nothing was written.\n`);
      return 4;
    }
    const report = await new MasterKeyRewrap(nats, keyring, { dryRun: !writing, skipEventLog: args['skip-event-log'] === true, operator, log }).run();
    process.stdout.write(`${args.json ? JSON.stringify(report) : formatReport(report)}\n`);
    return report.removable.length === report.previousKids.length ? 0 : 3;
  } finally {
    await nats.nc.drain().catch(() => undefined);
  }
}

// Only when run, not when a spec imports formatReport.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  run().then(
    (code) => process.exit(code),
    (error: unknown) => {
      // The name and message only: a cause chain could carry what a request held.
      log.error('rewrap failed; run it again to resume', { error: error instanceof Error ? { name: error.name, message: error.message } : String(error) });
      process.exit(1);
    },
  );
}
