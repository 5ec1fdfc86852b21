#!/usr/bin/env node
// The `mfa-authenticator` command (npx mfa-authenticator …): the compiled reference authenticator,
// built by `npm start`, `npm test` or `npx tsc -b`.
import { existsSync } from 'node:fs';

const main = new URL('../dist/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('mfa-authenticator: not built yet; run `npx tsc -b` (or npm start / npm test) first\n');
  process.exit(1);
}
await import(main.href);
