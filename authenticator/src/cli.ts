import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { access, constants, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DEVICE_KEY_ALGORITHMS, DEVICE_PLATFORMS, type DeviceKeyAlgorithm, type DevicePlatform } from '@mfa/contracts';
import { DeviceApiError, DeviceClient, MAX_TIMEOUT_MS, type ClientOptions, type DeviceAnswerReply, type DeviceDecision, type PendingChallenge } from './device-client.js';
import { loadState, saveState, stateExists, stateFilePath, StateFileError } from './state.js';

/**
 * `mfa-authenticator`: the reference authenticator app as a command line. It activates on a
 * user's account, shows the sign-in waiting for it and answers it, speaking the device API
 * (docs/device-api.md) through device-client.ts and keeping its key in a local file.
 */

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** For tests: the HTTP client, clock and nonces the device client uses. */
  client?: ClientOptions;
}

interface Globals {
  state?: string;
  timeout: number;
}

/** Runs one command line (without `node` and the script) and resolves to its exit code. */
export async function runCli(args: readonly string[], io: CliIo): Promise<number> {
  const program = createProgram(io);
  try {
    await program.parseAsync([...args], { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode; // commander printed it (help, version, usage)
    io.stderr(`mfa-authenticator: ${describeError(error)}\n`);
    return 1;
  }
}

/** A command line that makes no sense, found once the arguments are parsed. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** One line for the user: the server's code and message, never a stack trace. */
export function describeError(error: unknown): string {
  // The code and message may be the server's (or quote a URL as given): escaped, never run by the terminal.
  if (error instanceof DeviceApiError) return `${printable(error.message)} (${printable(error.code)}${error.status ? `, HTTP ${error.status}` : ''})`;
  if (error instanceof StateFileError) return printable(error.message);
  return printable(error instanceof Error ? error.message : String(error));
}

export function createProgram(io: CliIo): Command {
  const program = new Command()
    .name('mfa-authenticator')
    .description('The reference authenticator app: activate on an account, see the sign-in waiting, approve it with the number shown, deny it or report fraud (docs/device-api.md)')
    .option('--state <file>', 'the device\'s key and identity (default: MFA_AUTHENTICATOR_STATE or ~/.mfa-authenticator/device.json)')
    .option('--timeout <ms>', `how long to wait for each answer of the server, whole milliseconds up to ${MAX_TIMEOUT_MS}`, milliseconds, 10_000)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(mfa-authenticator <command> --help for its options)');

  const globals = (): Globals => program.opts<Globals>();
  const clientOptions = (): ClientOptions => ({ timeoutMs: globals().timeout, ...io.client });
  const file = () => stateFilePath(globals().state, io.env);
  const client = async () => new DeviceClient(await loadState(file()), clientOptions());
  // JSON.stringify escapes C0 controls in strings but not DEL and C1 (U+009B is a CSI to some terminals).
  const json = (value: unknown) => io.stdout(`${JSON.stringify(value, null, 2).replace(/[\u007f-\u009f]/g, escapeChar)}\n`);
  /** The command as typed again: with --state when it was given, since the answer must use the same device. */
  const command = () => (globals().state !== undefined ? `mfa-authenticator --state ${shellWord(globals().state!)}` : 'mfa-authenticator');

  program
    .command('activate <url>')
    .description('generate a key, activate this device with the activation URL (or its QR code\'s text) and keep the key in the state file; prints the deviceId')
    .option('--name <name>', 'shown to the user and administrators (default: the platform)')
    .addOption(new Option('--platform <platform>', 'ios or android (with --push-token), or none: poll for sign-ins').choices(DEVICE_PLATFORMS).default('none'))
    .option('--push-token <token>', 'the APNs device token or FCM registration token (ios, android)')
    .addOption(new Option('--algorithm <algorithm>', 'the key\'s algorithm').choices(DEVICE_KEY_ALGORITHMS).default('ES256'))
    .option('--force', 'replace a device already in the state file (its key is lost)')
    .option('--insecure', 'accept a plain http:// URL to another host than this machine (localhost, 127.0.0.0/8, ::1): the sign-ins and answers then cross the network unprotected')
    .option('--json', 'print the activation as JSON')
    .action(async (url: string, o: { name?: string; platform: DevicePlatform; pushToken?: string; algorithm: DeviceKeyAlgorithm; force?: boolean; insecure?: boolean; json?: boolean }) => {
      if (o.platform === 'none' && o.pushToken !== undefined) throw new UsageError('--push-token goes with --platform ios or android');
      if (o.platform !== 'none' && o.pushToken === undefined) throw new UsageError(`--platform ${o.platform} needs --push-token`);
      const target = file();
      // Checked before the code is spent: a device activated without a place for its key is lost.
      if (!o.force && (await stateExists(target))) throw new StateFileError(`a device is already kept in ${target}; use --force to replace it, or --state <file> for another`);
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      await access(dirname(target), constants.W_OK).catch((error: unknown) => {
        throw new StateFileError(`cannot write to ${dirname(target)}`, { cause: error });
      });
      const device = await DeviceClient.activate(url, {
        ...clientOptions(),
        algorithm: o.algorithm,
        platform: o.platform,
        insecure: o.insecure ?? false,
        ...(o.pushToken !== undefined ? { pushToken: o.pushToken } : {}),
        ...(o.name !== undefined ? { name: o.name } : {}),
      });
      await saveState(target, device.identity);
      const { deviceId, tenantId, userId, pollSeconds } = device.identity;
      if (o.json) return json({ deviceId, tenantId, userId, pollSeconds, stateFile: target });
      io.stdout(`${printable(deviceId)}\n`);
      io.stderr(`activated for user ${printable(userId)} of tenant ${printable(tenantId)}; key kept in ${target}\n`);
    });

  program
    .command('pending')
    .description('the sign-in waiting for this device: application, client IP, location and time')
    .option('--wait <seconds>', 'poll (every pollSeconds of the activation) until one arrives or the time is up', positiveNumber)
    .option('--json', 'print the reply of the device API as JSON')
    .action(async (o: { wait?: number; json?: boolean }) => {
      const device = await client();
      const challenge = o.wait !== undefined ? await device.waitForPending(o.wait * 1000) : await device.pending();
      if (o.json) return json({ challenge });
      io.stdout(challenge ? describeChallenge(challenge, command()) : 'no sign-in is waiting\n');
    });

  const answer = async (device: DeviceClient, challengeId: string, decision: DeviceDecision, number: string | undefined, o: { json?: boolean }) => {
    const reply = await device.answer(challengeId, decision, number);
    if (o.json) return json({ challengeId, ...reply });
    io.stdout(describeAnswer(reply));
  };
  // approve and fraud name the sign-in `pending` showed: whichever waits by the time the user types
  // may be another one (someone else's, with a stolen password), and a sign-in without a number
  // (RADIUS) would be approved with nothing to tell them apart.
  const named = (decision: 'approve' | 'fraud', challengeId: string | undefined): string => {
    if (challengeId !== undefined) return challengeId;
    throw new UsageError(`${decision} needs --challenge <id>, the sign-in you were shown: mfa-authenticator pending prints it, with the command to type`);
  };

  program
    .command('approve [number]')
    .description('approve the sign-in pending showed (--challenge <id>), with the two digits its sign-in page shows (no number for a sign-in without a page, such as a VPN over RADIUS)')
    .addOption(new Option('--challenge <id>', 'the sign-in to approve, as pending shows it (required)'))
    .option('--number <digits>', 'the two digits its sign-in page shows (or give them as the argument)')
    .option('--json', 'print the reply as JSON')
    .action(async (argument: string | undefined, o: { challenge?: string; number?: string; json?: boolean }) => {
      if (argument !== undefined && o.number !== undefined) throw new UsageError('give the number once: as the argument or with --number');
      const number = o.number ?? argument;
      if (number !== undefined && !/^\d{2}$/.test(number)) throw new UsageError('the number is the two digits the sign-in page shows, e.g. 42');
      const challengeId = named('approve', o.challenge);
      const device = await client();
      // The server takes a number missing, or sent for a sign-in without one, as a wrong number and
      // denies the sign-in: refused here instead while the view says which it is (one GET; a sign-in
      // no longer pending is left to the server).
      const view = await device.pending();
      if (view?.challengeId === challengeId) {
        const id = shellWord(challengeId);
        if (view.numberMatch !== false && number === undefined) throw new UsageError(`sign-in ${id} needs the two digits its sign-in page shows: ${command()} approve --challenge ${id} --number <number>`);
        if (view.numberMatch === false && number !== undefined) throw new UsageError(`sign-in ${id} has no number to type (a sign-in without a page, such as a VPN): ${command()} approve --challenge ${id}`);
      }
      await answer(device, challengeId, 'approve', number, o);
    });
  program
    .command('deny')
    .description('deny the sign-in')
    .addOption(new Option('--challenge <id>', 'the sign-in to deny (default: the one pending)'))
    .option('--json', 'print the reply as JSON')
    .action(async (o: { challenge?: string; json?: boolean }) => {
      const device = await client();
      // Denying whichever waits is safe: at worst the user's own sign-in is denied and started again.
      let challengeId = o.challenge;
      if (challengeId === undefined) {
        const pending = await device.pending();
        if (!pending) throw new DeviceApiError('not_found', 'no sign-in is waiting for this device');
        challengeId = pending.challengeId;
      }
      await answer(device, challengeId, 'deny', undefined, o);
    });
  program
    .command('fraud')
    .description('deny the sign-in pending showed (--challenge <id>) and report it as fraud: you did not start it')
    .addOption(new Option('--challenge <id>', 'the sign-in to report, as pending shows it (required)'))
    .option('--json', 'print the reply as JSON')
    .action(async (o: { challenge?: string; json?: boolean }) => {
      const challengeId = named('fraud', o.challenge);
      await answer(await client(), challengeId, 'fraud', undefined, o);
    });

  return program;
}

function positiveNumber(value: string): number {
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) throw new InvalidArgumentError('must be a positive number');
  return number;
}

/** What AbortSignal.timeout takes; anything else would fail every request, reported as the network's fault. */
function milliseconds(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1 || number > MAX_TIMEOUT_MS) throw new InvalidArgumentError(`must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  return number;
}

/**
 * The sign-in and the commands that answer exactly it (`command`: how to call the app again), so
 * the approval goes to the sign-in the user saw and not to whichever waits by then.
 */
export function describeChallenge(challenge: PendingChallenge, command = 'mfa-authenticator'): string {
  const location = challenge.location ? `${challenge.location.countryName} (${challenge.location.country})` : 'unknown';
  const rows: Array<[string, string]> = [
    ['application', challenge.application ?? 'unknown'],
    ['client IP', challenge.clientIp ?? 'unknown'],
    ['location', location],
    ['started', challenge.startedAt],
    ['expires', challenge.expiresAt],
  ];
  const id = shellWord(challenge.challengeId);
  const numberless = challenge.numberMatch === false;
  return [
    `sign-in waiting: ${printable(challenge.challengeId)}`,
    ...rows.map(([label, value]) => `  ${label.padEnd(12)} ${printable(value)}`),
    numberless ? 'no number to type (a sign-in without a page, such as a VPN); to approve it:' : 'to approve it, with the two digits its sign-in page shows:',
    `  ${command} approve --challenge ${id}${numberless ? '' : ' --number <number>'}`,
    'or to deny it, or report it as fraud (you did not start it):',
    `  ${command} deny --challenge ${id}`,
    `  ${command} fraud --challenge ${id}`,
    '',
  ].join('\n');
}

export function describeAnswer(reply: DeviceAnswerReply): string {
  return reply.status === 'approved' ? 'approved\n' : `denied: ${printable(reply.reason)}\n`;
}

const escapeChar = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
/** Text from the server as the terminal shows it: control characters escaped, never interpreted. */
const printable = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, escapeChar);
/** A word the shell reads back as printed: as it is when plain, else single-quoted. */
const shellWord = (text: string) => {
  const shown = printable(text);
  return /^[A-Za-z0-9._:/=@%+-]+$/.test(shown) ? shown : `'${shown.replaceAll("'", `'\\''`)}'`;
};
