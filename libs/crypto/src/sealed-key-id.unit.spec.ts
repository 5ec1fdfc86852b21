import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { keyringFromMasterKey } from './keyring.js';
import { seal, SealContext, sealedKeyId } from './seal.js';

describe('sealedKeyId', () => {
  const ring = keyringFromMasterKey(Buffer.alloc(32, 5));

  it('names the master key a v2 or v1 sealed secret was sealed with, without opening it', () => {
    assert.equal(sealedKeyId(seal(ring, Buffer.from('x'), SealContext.pinHash('t', 'u'))), ring.kid);
    assert.equal(sealedKeyId(`v1.${ring.kid}.aaaaaaaaaaaaaaaa.YQ.aaaaaaaaaaaaaaaaaaaaaa`), ring.kid);
  });

  it('is undefined for anything else', () => {
    for (const text of ['', 'v2.kid.1.iv.ct', 'd1.1.iv.ct.tag', 'v3.kid.1.iv.ct.tag', 'v2..1.iv.ct.tag']) assert.equal(sealedKeyId(text), undefined, text);
  });
});
