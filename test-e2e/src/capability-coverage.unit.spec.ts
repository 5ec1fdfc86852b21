// Every capability of the NATS API reaches people: the CLI names every subject, and the console
// every one an operator uses (those the IdPs or end users call are listed below, with why).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Subjects } from '@mfa/contracts';
import { root, sources } from './sources.js';


type SubjectKey = keyof typeof Subjects;

/** Subjects the console does not offer by design, and why. */
const NOT_IN_CONSOLE: Partial<Record<SubjectKey, string>> = {
  challengeStart: 'the IdP starts a sign-in challenge for its user; an operator has no sign-in to challenge',
  challengeVerify: 'the IdP passes on the code its user typed',
  challengeStatus: 'the IdP polls the challenge it started (push, voice)',
  challengeResend: 'the IdP resends a code its user asked for again',
  appPasswordsVerify: 'the IdP (or RADIUS front) checks an app password a user typed',
  fraudReport: 'the end user (through the IdP or the authenticator app) reports a sign-in they did not start',
};


/** Whether `text` names the subject as `Subjects.<key>` (not a longer key that begins with it). */
const names = (text: string, key: string) => new RegExp(`\\bSubjects\\.${key}\\b`).test(text);

const cli = readFileSync(join(root, 'cli', 'src', 'main.ts'), 'utf8');
const consoleSources = sources(join(root, 'services', 'console', 'src')).map((file) => readFileSync(file, 'utf8')).join('\n');
const keys = Object.keys(Subjects) as SubjectKey[];

describe('capability coverage: every subject of the API is reached by the CLI and, unless IdP-facing, by the console', () => {
  it('the CLI names every subject', () => {
    assert.deepEqual(keys.filter((key) => !names(cli, key)).map((key) => Subjects[key]), [], 'subjects cli/src/main.ts does not name as Subjects.<key>');
  });

  it('the console names every subject not listed as IdP- or end-user-facing', () => {
    assert.deepEqual(
      keys.filter((key) => !(key in NOT_IN_CONSOLE) && !names(consoleSources, key)).map((key) => Subjects[key]),
      [],
      'subjects services/console/src does not name as Subjects.<key>: offer them, or list them in NOT_IN_CONSOLE with why',
    );
  });

  it('every exclusion is a subject the console indeed does not name, with a reason', () => {
    for (const [key, reason] of Object.entries(NOT_IN_CONSOLE)) {
      assert.ok(key in Subjects, `${key}: no such subject`);
      assert.ok(reason.trim() !== '', `${key}: no reason`);
      assert.ok(!names(consoleSources, key), `${key}: the console names it now; take it off NOT_IN_CONSOLE`);
    }
  });
});
