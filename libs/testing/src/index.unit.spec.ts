import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';

describe('@mfa/testing entry point', () => {
  it('loads no server client, messaging or telemetry, so unit tests can import it', () => {
    // A fresh process, because this one may have loaded anything already.
    const entry = new URL('./index.js', import.meta.url).href;
    const script = `
      import { registerHooks } from 'node:module';
      const loaded = [];
      registerHooks({ resolve(specifier, context, next) { const r = next(specifier, context); loaded.push(r.url); return r; } });
      await import(${JSON.stringify(entry)});
      console.log(JSON.stringify(loaded));`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const loaded: string[] = JSON.parse(child.stdout);
    assert.ok(loaded.some((url) => url.endsWith('/factories.js')), 'the probe saw the imports');
    const heavy = loaded.filter((url) => /\/node_modules\/(ioredis|pg|@nats-io|@opentelemetry)\/|\/libs\/(messaging|telemetry)\//.test(url));
    assert.deepEqual(heavy, []);
  });
});
