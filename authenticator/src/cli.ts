import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { access, constants, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DEVICE_KEY_ALGORITHMS, DEVICE_PLATFORMS, type DeviceKeyAlgorithm, type DevicePlatform } from '@mfa/contracts';
import { DeviceApiError, DeviceClient, type ClientOptions, type DeviceAnswerReply, type DeviceDecision, type PendingChallenge } from './device-client.js';
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
  if (error instanceof DeviceApiError) return `${error.message} (${error.code}${error.status ? `, HTTP ${error.status}` : ''})`;
  if (error instanceof StateFileError) return error.message;
  return error instanceof Error ? error.message : String(error);
}

export function createProgram(io: CliIo): Command {
  const program = new Command()
    .name('mfa-authenticator')
    .description('The reference authenticator app: activate on an account, see the sign-in waiting, approve it with the number shown, deny it or report fraud (docs/device-api.md)')
    .option('--state <file>', 'the device\'s key and identity (default: MFA_AUTHENTICATOR_STATE or ~/.mfa-authenticator/device.json)')
    .option('--timeout <ms>', 'how long to wait for each answer of the server', positiveNumber, 10_000)
    .exitOverride()
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .showHelpAfterError('(mfa-authenticator <command> --help for its options)');

  const globals = (): Globals => program.opts<Globals>();
  const clientOptions = (): ClientOptions => ({ timeoutMs: globals().timeout, ...io.client });
  const file = () => stateFilePath(globals().state, io.env);
  const client = async () => new DeviceClient(await loadState(file()), clientOptions());
  const json = (value: unknown) => io.stdout(`${JSON.stringify(value, null, 2)}\n`);

  program
    .command('activate <url>')
    .description('generate a key, activate this device with the activation URL (or its QR code\'s text) and keep the key in the state file; prints the deviceId')
    .option('--name <name>', 'shown to the user and administrators (default: the platform)')
    .addOption(new Option('--platform <platform>', 'ios or android (with --push-token), or none: poll for sign-ins').choices(DEVICE_PLATFORMS).default('none'))
    .option('--push-token <token>', 'the APNs device token or FCM registration token (ios, android)')
    .addOption(new Option('--algorithm <algorithm>', 'the key\'s algorithm').choices(DEVICE_KEY_ALGORITHMS).default('ES256'))
    .option('--force', 'replace a device already in the state file (its key is lost)')
    .option('--json', 'print the activation as JSON')
    .action(async (url: string, o: { name?: string; platform: DevicePlatform; pushToken?: string; algorithm: DeviceKeyAlgorithm; force?: boolean; json?: boolean }) => {
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
        ...(o.pushToken !== undefined ? { pushToken: o.pushToken } : {}),
        ...(o.name !== undefined ? { name: o.name } : {}),
      });
      await saveState(target, device.identity);
      const { deviceId, tenantId, userId, pollSeconds } = device.identity;
      if (o.json) return json({ deviceId, tenantId, userId, pollSeconds, stateFile: target });
      io.stdout(`${deviceId}\n`);
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
      io.stdout(challenge ? describeChallenge(challenge) : 'no sign-in is waiting\n');
    });

  const answer = (decision: DeviceDecision, number?: string) => async (o: { challenge?: string; json?: boolean }) => {
    const device = await client();
    let challengeId = o.challenge;
    if (challengeId === undefined) {
      const pending = await device.pending();
      if (!pending) throw new DeviceApiError('not_found', 'no sign-in is waiting for this device');
      challengeId = pending.challengeId;
    }
    const reply = await device.answer(challengeId, decision, number);
    if (o.json) return json({ challengeId, ...reply });
    io.stdout(describeAnswer(reply));
  };
  const challengeOption = () => new Option('--challenge <id>', 'the sign-in to answer (default: the one pending)');

  program
    .command('approve [number]')
    .description('approve the sign-in with the two digits its sign-in page shows (no number for a sign-in without a page, such as a VPN over RADIUS)')
    .addOption(challengeOption())
    .option('--json', 'print the reply as JSON')
    .action(async (number: string | undefined, o: { challenge?: string; json?: boolean }) => {
      if (number !== undefined && !/^\d{2}$/.test(number)) throw new UsageError('the number is the two digits the sign-in page shows, e.g. 42');
      await answer('approve', number)(o);
    });
  program
    .command('deny')
    .description('deny the sign-in')
    .addOption(challengeOption())
    .option('--json', 'print the reply as JSON')
    .action(answer('deny'));
  program
    .command('fraud')
    .description('deny the sign-in and report it as fraud: you did not start it')
    .addOption(challengeOption())
    .option('--json', 'print the reply as JSON')
    .action(answer('fraud'));

  return program;
}

function positiveNumber(value: string): number {
  const number = Number(value);
  if (!Number.isFinite(number) || number <= 0) throw new InvalidArgumentError('must be a positive number');
  return number;
}

export function describeChallenge(challenge: PendingChallenge): string {
  const location = challenge.location ? [challenge.location.city, challenge.location.region, challenge.location.country].filter((part) => part).join(', ') : '';
  const rows: Array<[string, string]> = [
    ['application', challenge.application ?? 'unknown'],
    ['client IP', challenge.clientIp ?? 'unknown'],
    ['location', location || 'unknown'],
    ['started', challenge.startedAt],
    ['expires', challenge.expiresAt],
  ];
  const numberless = challenge.numberMatch === false;
  return [
    `sign-in waiting: ${printable(challenge.challengeId)}`,
    ...rows.map(([label, value]) => `  ${label.padEnd(12)} ${printable(value)}`),
    numberless
      ? 'no number to type (a sign-in without a page, such as a VPN): approve (mfa-authenticator approve), or deny, or report fraud'
      : 'approve with the number its sign-in page shows (mfa-authenticator approve <number>), or deny, or report fraud',
    '',
  ].join('\n');
}

export function describeAnswer(reply: DeviceAnswerReply): string {
  return reply.status === 'approved' ? 'approved\n' : `denied: ${printable(reply.reason)}\n`;
}

/** Text from the server as the terminal shows it: control characters escaped, never interpreted. */
const printable = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
