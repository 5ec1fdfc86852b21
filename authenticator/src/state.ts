import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { DeviceIdentity } from './device-client.js';

/**
 * The device's state file: its identity and private key, readable by its owner only (0600). It is
 * written whole to a temporary file next to it and renamed over it, so a crash never leaves half
 * a key behind.
 */

/** `--state`, else MFA_AUTHENTICATOR_STATE, else ~/.mfa-authenticator/device.json. */
export function stateFilePath(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const chosen = option ?? env.MFA_AUTHENTICATOR_STATE;
  return resolve(chosen && chosen.trim() !== '' ? chosen : join(homedir(), '.mfa-authenticator', 'device.json'));
}

export class StateFileError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StateFileError';
  }
}

export async function saveState(file: string, identity: DeviceIdentity): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const temporary = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temporary, 'wx', 0o600);
  try {
    await handle.chmod(0o600); // exactly 0600 whatever the umask
    await handle.writeFile(`${JSON.stringify(identity, null, 2)}\n`, 'utf8');
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

export async function loadState(file: string): Promise<DeviceIdentity> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new StateFileError(`no device at ${file}: activate one first (mfa-authenticator activate <url>)`, { cause: error });
    throw new StateFileError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new StateFileError(`${file} is not JSON`, { cause: error });
  }
  const parsed = DeviceIdentity.safeParse(json);
  if (!parsed.success) throw new StateFileError(`${file} is not a device state file (${parsed.error.issues.map((i) => i.path.join('.') || 'file').join(', ')})`, { cause: parsed.error });
  return parsed.data;
}

/** True when something is already at the path (activation refuses to overwrite a device's key unless told to). */
export async function stateExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new StateFileError(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
}
