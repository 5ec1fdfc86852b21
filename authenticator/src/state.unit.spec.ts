import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDeviceKey, loadState, saveState, stateExists, stateFilePath, StateFileError, type DeviceIdentity } from './index.js';

const directory = mkdtempSync(join(tmpdir(), 'mfa-authenticator-state-'));
after(() => rmSync(directory, { recursive: true, force: true }));

function identity(): DeviceIdentity {
  const key = generateDeviceKey('Ed25519');
  return {
    deviceId: 'dev-1',
    tenantId: 'contoso',
    userId: 'helga',
    baseUrl: 'https://mfa.example.com/device',
    algorithm: 'Ed25519',
    privateKeyPem: key.privateKeyPem,
    publicKey: key.publicKey,
    pollSeconds: 5,
    platform: 'android',
    name: "Helga's Pixel",
    activatedAt: '2026-11-30T12:00:00.000Z',
  };
}

const mode = (path: string) => statSync(path).mode & 0o777;

describe('the state file', () => {
  it('is written with mode 0600 in a 0700 directory it creates, and reads back the same', async () => {
    const file = join(directory, 'new', 'device.json');
    const saved = identity();
    const umask = process.umask(0o000); // the file must be 0600 even when the umask allows more
    try {
      await saveState(file, saved);
    } finally {
      process.umask(umask);
    }
    assert.equal(mode(file), 0o600);
    assert.equal(mode(join(directory, 'new')), 0o700);
    assert.deepEqual(await loadState(file), saved);
    assert.equal(await stateExists(file), true);
  });

  it('is replaced whole (temporary file and rename), keeping 0600 and leaving nothing behind', async () => {
    const file = join(directory, 'replace.json');
    writeFileSync(file, 'old', { mode: 0o644 });
    const saved = { ...identity(), deviceId: 'dev-2' };
    await saveState(file, saved);
    assert.equal(mode(file), 0o600);
    assert.equal((await loadState(file)).deviceId, 'dev-2');
    assert.deepEqual(readdirSync(directory).filter((name) => name.startsWith('replace.json')), ['replace.json']);
  });

  it('says what is wrong with a missing, unreadable or foreign file', async () => {
    const missing = join(directory, 'missing.json');
    assert.equal(await stateExists(missing), false);
    await assert.rejects(loadState(missing), (e: unknown) => e instanceof StateFileError && /activate one first/.test(e.message));
    const notJson = join(directory, 'not-json.json');
    writeFileSync(notJson, '{');
    await assert.rejects(loadState(notJson), (e: unknown) => e instanceof StateFileError && /is not JSON/.test(e.message));
    const foreign = join(directory, 'foreign.json');
    writeFileSync(foreign, JSON.stringify({ deviceId: 'x', algorithm: 'RS256' }));
    await assert.rejects(loadState(foreign), (e: unknown) => e instanceof StateFileError && /not a device state file \(.*algorithm/.test(e.message));
  });
});

describe('where the state file is', () => {
  it('--state, else MFA_AUTHENTICATOR_STATE, else ~/.mfa-authenticator/device.json', () => {
    assert.equal(stateFilePath('/a/b.json', { MFA_AUTHENTICATOR_STATE: '/c/d.json' }), '/a/b.json');
    assert.equal(stateFilePath(undefined, { MFA_AUTHENTICATOR_STATE: '/c/d.json' }), '/c/d.json');
    assert.equal(stateFilePath(undefined, {}), join(homedir(), '.mfa-authenticator', 'device.json'));
    assert.equal(stateFilePath(undefined, { MFA_AUTHENTICATOR_STATE: ' ' }), join(homedir(), '.mfa-authenticator', 'device.json'));
    assert.equal(stateFilePath('relative.json', {}), join(process.cwd(), 'relative.json'));
  });
});
