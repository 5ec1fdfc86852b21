import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { outcomeEventId } from './outcome-id.js';

describe('outcome event id', () => {
  it('is the same for the same request, so a redelivered request is de-duplicated', () => {
    const source = randomUUID();
    assert.equal(outcomeEventId(source), outcomeEventId(source));
  });

  it('differs between requests and from the request id itself', () => {
    const a = randomUUID();
    const b = randomUUID();
    assert.notEqual(outcomeEventId(a), outcomeEventId(b));
    assert.notEqual(outcomeEventId(a), a);
  });

  it('is a version-4 RFC 9562 UUID that envelope validation accepts', () => {
    for (let i = 0; i < 200; i++) {
      const id = outcomeEventId(randomUUID());
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.ok(z.uuid().safeParse(id).success, id);
    }
  });
});
