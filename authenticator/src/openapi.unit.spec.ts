import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parse } from 'yaml';
import { DeviceActivateBody, DeviceActivateReply, DeviceAnswerBody, DeviceSigned } from '@mfa/contracts';
import { DENIAL_REASONS, DEVICE_ERROR_CODES, DevicePendingReply, PendingLocation } from './index.js';

/**
 * docs/device-api.openapi.yaml against what it describes: the schemas of libs/contracts (the
 * request bodies, the activation reply), the replies as device-client.ts reads them, and the
 * prose of docs/device-api.md (its endpoints, its error table). A change on one side only fails here.
 */

type Schema = Record<string, unknown>;
const docs = new URL('../../docs/', import.meta.url);
const openapi = parse(readFileSync(new URL('device-api.openapi.yaml', docs), 'utf8')) as Schema;
const prose = readFileSync(new URL('device-api.md', docs), 'utf8');

function at(node: unknown, ...keys: string[]): Schema {
  let value = node;
  for (const key of keys) {
    assert.ok(value && typeof value === 'object' && key in value, `missing ${keys.join('.')}`);
    value = (value as Schema)[key];
  }
  return value as Schema;
}

/** Follows a local $ref (#/components/…). */
function deref(node: Schema): Schema {
  const ref = node.$ref;
  if (typeof ref !== 'string') return node;
  assert.match(ref, /^#\//);
  return deref(at(openapi, ...ref.slice(2).split('/')));
}

const COMPARED = ['enum', 'const', 'pattern', 'minLength', 'maxLength', 'additionalProperties'] as const;

/**
 * The part of a JSON Schema both sides state, in one form: types as a sorted list (`[T, 'null']`,
 * `anyOf`/`oneOf` with `{type: 'null'}` and `nullable` all mean the same), constraints, required
 * fields sorted, properties recursively. Descriptions, formats and examples are the YAML's own.
 */
function canonical(input: Schema): Schema {
  const schema = deref(input);
  const variants = (schema.oneOf ?? schema.anyOf) as Schema[] | undefined;
  if (variants) {
    const nonNull = variants.map(deref).filter((v) => v.type !== 'null');
    if (nonNull.length === 1 && variants.length === 2) {
      const inner = canonical(nonNull[0]!);
      return { ...inner, type: [...(inner.type as string[]), 'null'].sort() };
    }
    return { oneOf: nonNull.map(canonical) };
  }
  const out: Schema = { type: [schema.type].flat().filter(Boolean).sort() };
  for (const keyword of COMPARED) if (schema[keyword] !== undefined) out[keyword] = schema[keyword];
  // Open to other properties is JSON Schema's default: `{}` and `true` say nothing more.
  if (out.additionalProperties === true || (typeof out.additionalProperties === 'object' && Object.keys(out.additionalProperties as Schema).length === 0)) delete out.additionalProperties;
  if (schema.required) out.required = [...(schema.required as string[])].sort();
  if (schema.properties) out.properties = Object.fromEntries(Object.entries(schema.properties as Record<string, Schema>).map(([name, s]) => [name, canonical(s)]));
  return out;
}

const fromZod = (schema: z.ZodType) => canonical(z.toJSONSchema(schema, { io: 'input' }) as Schema);
const operation = (path: string, method: string) => at(openapi, 'paths', path, method);
const jsonBody = (op: Schema) => at(op, 'requestBody', 'content', 'application/json', 'schema');
const jsonReply = (op: Schema, status: string) => at(deref(at(op, 'responses', status)), 'content', 'application/json', 'schema');

const ACTIVATE = '/v1/activate';
const PENDING = '/v1/challenges/pending';
const ANSWER = '/v1/challenges/{challengeId}/answer';

describe('docs/device-api.openapi.yaml', () => {
  it('is OpenAPI 3.1 with exactly the endpoints docs/device-api.md describes', () => {
    assert.match(String(openapi.openapi), /^3\.1\./);
    const described = Object.fromEntries(Object.entries(at(openapi, 'paths')).map(([path, item]) => [path, Object.keys(item as Schema).sort()]));
    assert.deepEqual(described, { [ACTIVATE]: ['post'], [PENDING]: ['get'], [ANSWER]: ['post'] });
    // The prose writes them with the path the server serves them under (/device, the servers' path).
    for (const server of openapi.servers as Schema[]) assert.match(String(server.url), /\/device$/);
    assert.match(prose, /^ {4}POST \/device\/v1\/activate$/m);
    assert.match(prose, /^ {4}GET \/device\/v1\/challenges\/pending +\(signed\)$/m);
    assert.match(prose, /^ {4}POST \/device\/v1\/challenges\/<challengeId>\/answer +\(signed\)$/m);
  });

  it('activation: the body is DeviceActivateBody, 201 is DeviceActivateReply, no signature', () => {
    const op = operation(ACTIVATE, 'post');
    assert.deepEqual(canonical(jsonBody(op)), fromZod(DeviceActivateBody));
    assert.deepEqual(canonical(jsonReply(op, '201')), fromZod(DeviceActivateReply));
    assert.deepEqual(op.security, []);
    // DeviceActivateBody's refinement, as JSON Schema: a push token exactly when there is a platform.
    const body = deref(jsonBody(op));
    assert.deepEqual([body.if, body.then, body.else], [{ properties: { platform: { const: 'none' } } }, { not: { required: ['pushToken'] } }, { required: ['pushToken'] }]);
  });

  it('pending: 200 is the reply device-client.ts reads', () => {
    assert.deepEqual(canonical(jsonReply(operation(PENDING, 'get'), '200')), fromZod(DevicePendingReply));
  });

  it('pending: the examples of both files are such replies, with the location the server sends ({country, countryName})', () => {
    const fromYaml = at(deref(at(operation(PENDING, 'get'), 'responses', '200')), 'content', 'application/json', 'example');
    const block = /^ {4}\{\n {6}"challenge": \{\n[\s\S]*?\n {4}\}$/m.exec(prose);
    assert.ok(block, 'docs/device-api.md, the pending reply');
    const fromProse = JSON.parse(block[0]) as unknown;
    for (const [where, example] of [['device-api.openapi.yaml', fromYaml], ['device-api.md', fromProse]] as const) {
      const parsed = DevicePendingReply.safeParse(example);
      assert.ok(parsed.success, `${where}: ${parsed.error?.message}`);
      // The schema keeps fields it does not know: the example must have no others.
      assert.deepEqual(Object.keys(parsed.data.challenge!.location!).sort(), Object.keys(PendingLocation.shape).sort(), where);
    }
  });

  it('answer: the body is DeviceAnswerBody; 200 approved, or denied with a documented reason', () => {
    const op = operation(ANSWER, 'post');
    assert.deepEqual(canonical(jsonBody(op)), fromZod(DeviceAnswerBody));
    const body = deref(jsonBody(op));
    // A number goes only with approve (and only for a sign-in that shows one: the server decides that).
    assert.deepEqual([body.if, body.then, body.else], [{ properties: { decision: { enum: ['deny', 'fraud'] } } }, { not: { required: ['number'] } }, undefined]);
    assert.equal(DeviceAnswerBody.safeParse({ decision: 'deny', number: '42', signature: 'x' }).success, false);
    assert.equal(DeviceAnswerBody.safeParse({ decision: 'approve', signature: 'x' }).success, true);
    const reply = canonical(jsonReply(op, '200'));
    assert.deepEqual(reply, {
      oneOf: [
        { type: ['object'], required: ['status'], properties: { status: { type: ['string'], const: 'approved' } } },
        { type: ['object'], required: ['reason', 'status'], properties: { status: { type: ['string'], const: 'denied' }, reason: { type: ['string'], enum: [...DENIAL_REASONS] } } },
      ],
    });
    for (const reason of DENIAL_REASONS) assert.ok(prose.includes(`\`${reason}\``), `docs/device-api.md names ${reason}`);
    const path = (op.parameters as Schema[]).map(deref).find((p) => p.in === 'path');
    assert.deepEqual([path?.name, path?.required], ['challengeId', true]);
  });

  it('the signed requests carry the four headers, required, and the signature scheme', () => {
    const scheme = at(openapi, 'components', 'securitySchemes', 'deviceSignature');
    assert.deepEqual([scheme.type, scheme.in, scheme.name], ['apiKey', 'header', 'Mfa-Signature']);
    for (const [path, method] of [[PENDING, 'get'], [ANSWER, 'post']] as const) {
      const op = operation(path, method);
      assert.deepEqual(op.security, [{ deviceSignature: [] }], `${method} ${path}`);
      const headers = (op.parameters as Schema[]).map(deref).filter((p) => p.in === 'header');
      assert.deepEqual(headers.map((h) => [h.name, h.required]), [['Mfa-Device', true], ['Mfa-Timestamp', true], ['Mfa-Nonce', true], ['Mfa-Signature', true]], `${method} ${path}`);
    }
    const nonce = new RegExp(String(at(openapi, 'components', 'parameters', 'MfaNonce', 'schema').pattern));
    assert.ok(nonce.test('a'.repeat(16)) && nonce.test('a'.repeat(64)) && !nonce.test('a'.repeat(15)) && !nonce.test('a'.repeat(65)) && !nonce.test(`${'a'.repeat(20)}=`), 'Mfa-Nonce: 16 to 64 base64url characters');
    assert.match(prose, /`Mfa-Nonce` \| 16 to 64 base64url characters/);
  });

  it('states the strings a device signs as DeviceSigned builds them', () => {
    const described = (schema: string, field: string) => String(at(openapi, 'components', 'schemas', schema, 'properties', field).description);
    const escaped = (text: string) => text.replaceAll('\n', '\\n');
    assert.ok(described('ActivateBody', 'proof').includes(`\`${escaped(DeviceSigned.activation('<code as sent>', '<publicKey>'))}\``));
    assert.ok(described('AnswerBody', 'signature').includes(`\`${escaped(DeviceSigned.answer('<challengeId>', '<decision>', '<number or empty>'))}\``));
    assert.ok(prose.includes(`\`${escaped(DeviceSigned.activation('<code as sent>', '<publicKey>'))}\``), 'docs/device-api.md, the proof');
    assert.ok(prose.includes(`\`${escaped(DeviceSigned.answer('<challengeId>', '<decision>', '<number or empty>'))}\``), 'docs/device-api.md, the answer');
    const lines = ['<METHOD, upper case>', '<path, as the server receives it, with its query, e.g. /device/v1/challenges/pending>', '<Mfa-Timestamp>', '<Mfa-Nonce>', '<SHA-256 of the request body, base64url; of zero bytes when there is none>'];
    assert.equal(DeviceSigned.request('get', 'P', 'T', 'N', 'B'), 'GET\nP\nT\nN\nB');
    const block = () => lines.map((l) => ` {4,8}${l.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`).join('\n');
    assert.match(String(at(openapi, 'info').description), new RegExp(block()));
    assert.match(prose, new RegExp(block()));
  });

  it('every error of docs/device-api.md\'s table, with its status, and no other', () => {
    const table = [...prose.matchAll(/^\| (\d{3}) \| `([a-z_]+)` \| (.+) \|$/gm)].map(([, status, code]) => ({ status: status!, code: code! }));
    assert.ok(table.length >= 6, 'the error table of docs/device-api.md');
    assert.deepEqual([...new Set(table.map((row) => row.code))].sort(), [...DEVICE_ERROR_CODES].sort());
    const errorBody = at(openapi, 'components', 'schemas', 'Error');
    assert.deepEqual(at(errorBody, 'properties', 'error', 'properties', 'code').enum, [...DEVICE_ERROR_CODES]);
    assert.deepEqual(at(errorBody, 'properties', 'error').required, ['code', 'message']);

    // status → the codes its descriptions name (`code`: …; a status may have more than one)
    const described = new Map<string, Set<string>>();
    for (const [path, item] of Object.entries(at(openapi, 'paths'))) {
      for (const [method, op] of Object.entries(item as Schema)) {
        for (const [status, response] of Object.entries(at(op, 'responses'))) {
          if (/^2/.test(status)) continue;
          const resolved = deref(response as Schema);
          assert.equal(deref(jsonReply(op as Schema, status)), errorBody, `${method} ${path} ${status}: the error body`);
          const description = String(resolved.description);
          assert.match(description, /^`[a-z_]+`/, `${method} ${path} ${status}: the description starts with the code`);
          const codes = described.get(status) ?? new Set<string>();
          for (const [, code] of description.matchAll(/`([a-z_]+)`:/g)) codes.add(code!);
          described.set(status, codes);
        }
      }
    }
    const pairs = (entries: Iterable<[string, string]>) => [...new Set([...entries].map(([status, code]) => `${status} ${code}`))].sort();
    assert.deepEqual(
      pairs([...described.entries()].flatMap(([status, codes]) => [...codes].map((code) => [status, code] as [string, string]))),
      pairs(table.map((row) => [row.status, row.code] as [string, string])),
    );
  });
});
