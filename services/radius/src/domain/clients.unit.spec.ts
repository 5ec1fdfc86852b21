import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ClientDirectory, RadiusClients } from './clients.js';
import { clientIpOf } from './calling-station.js';

const secret = 'a-secret-of-16-chars';
const parse = (value: unknown) => RadiusClients.safeParse(value);

describe('RADIUS_CLIENTS', () => {
  it('reads a JSON array; empty or unset is no client', () => {
    assert.deepEqual(parse(undefined).data, []);
    assert.deepEqual(parse('').data, []);
    const ok = parse(JSON.stringify([{ cidr: '192.0.2.0/24', secret, tenantId: 'contoso' }]));
    assert.equal(ok.success, true);
  });

  it('refuses bad JSON, short secrets, bad ranges, unknown fields, repeated ranges and bad modes, naming where', () => {
    const problems = (value: unknown) => {
      const r = parse(value);
      assert.equal(r.success, false);
      return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    };
    assert.match(problems('[{'), /JSON array/);
    assert.match(problems('{}'), /JSON array/);
    assert.match(problems(JSON.stringify([{ cidr: '192.0.2.0/24', secret: 'short', tenantId: 'contoso' }])), /^0\.secret: must be at least 16 characters/);
    assert.match(problems(JSON.stringify([{ cidr: '192.0.2.0/33', secret, tenantId: 'contoso' }])), /0\.cidr: must be an IPv4 or IPv6 range/);
    assert.match(problems(JSON.stringify([{ cidr: 'vpn.example', secret, tenantId: 'contoso' }])), /0\.cidr/);
    assert.match(problems(JSON.stringify([{ cidr: '192.0.2.1', secret, tenantId: 'contoso', extra: 1 }])), /Unrecognized key/);
    assert.match(problems(JSON.stringify([{ cidr: '192.0.2.1', secret, tenantId: 'bad tenant' }])), /0\.tenantId/);
    assert.match(problems(JSON.stringify([{ cidr: '192.0.2.1', secret, tenantId: 'c', passwordMode: 'pap' }])), /0\.passwordMode/);
    assert.match(problems(JSON.stringify([{ cidr: '192.0.2.1', secret, tenantId: 'a' }, { cidr: '192.0.2.1/32', secret, tenantId: 'b' }])), /1\.cidr: names the same range as entry 0/);
    // The same range written otherwise: host bits set, or as IPv4-mapped IPv6.
    assert.match(problems(JSON.stringify([{ cidr: '10.0.2.0/24', secret, tenantId: 'a' }, { cidr: '10.0.2.77/24', secret, tenantId: 'b' }])), /1\.cidr: names the same range as entry 0/);
    assert.match(problems(JSON.stringify([{ cidr: '10.0.2.0/24', secret, tenantId: 'a' }, { cidr: '::ffff:10.0.2.0/120', secret, tenantId: 'b' }])), /1\.cidr: names the same range as entry 0/);
    assert.match(problems(JSON.stringify([{ cidr: '2001:db8::/32', secret, tenantId: 'a' }, { cidr: '2001:db8:0:1::/32', secret, tenantId: 'b' }])), /1\.cidr: names the same range as entry 0/);
    assert.equal(RadiusClients.safeParse(JSON.stringify([{ cidr: '10.0.2.0/24', secret, tenantId: 'a' }, { cidr: '10.0.2.0/25', secret, tenantId: 'b' }])).success, true, 'a narrower range is another range');
    // The secret never appears in a message.
    assert.ok(!problems(JSON.stringify([{ cidr: 'x', secret: 'tiny-secret', tenantId: 'c' }])).includes('tiny-secret'));
  });
});

describe('ClientDirectory', () => {
  const entries = parse(
    JSON.stringify([
      { cidr: '10.0.0.0/8', secret, tenantId: 'site', name: 'all of ten' },
      { cidr: '10.1.2.3', secret, tenantId: 'vpn', passwordMode: 'otp' },
      { cidr: '2001:db8::/32', secret, tenantId: 'six' },
      { cidr: '::ffff:192.0.2.0/120', secret, tenantId: 'mapped' },
    ]),
  ).data!;
  const clients = new ClientDirectory(entries, 'challenge');

  it('matches the most specific range, whatever the order of the entries', () => {
    assert.equal(clients.match('10.1.2.3')?.tenantId, 'vpn');
    assert.equal(clients.match('10.1.2.3')?.passwordMode, 'otp');
    assert.equal(clients.match('10.1.2.4')?.tenantId, 'site');
    assert.equal(clients.match('10.1.2.4')?.name, 'all of ten');
    assert.equal(clients.match('10.1.2.4')?.passwordMode, 'challenge', 'the service-wide mode');
    assert.equal(clients.match('10.1.2.3')?.name, '10.1.2.3', 'no name: its range');
  });

  it('reads IPv6, and IPv4-mapped addresses (dual-stack sockets) as IPv4', () => {
    assert.equal(clients.match('2001:db8:1::5')?.tenantId, 'six');
    assert.equal(clients.match('::ffff:10.1.2.3')?.tenantId, 'vpn');
    assert.equal(clients.match('192.0.2.77')?.tenantId, 'mapped');
  });

  it('covers nobody else', () => {
    for (const a of ['11.0.0.1', '2001:db9::1', '127.0.0.1', 'not an address', '']) assert.equal(clients.match(a), undefined, a);
    assert.equal(new ClientDirectory([], 'challenge').match('10.1.2.3'), undefined);
  });
});

describe('Calling-Station-Id', () => {
  it('is the client IP when a NAS wrote an address, with or without a port', () => {
    const cases: Array<[string, string | undefined]> = [
      ['198.51.100.7', '198.51.100.7'],
      ['198.51.100.7:51234', '198.51.100.7'],
      ['198.51.100.7[4500]', '198.51.100.7'],
      [' 198.51.100.7 ', '198.51.100.7'],
      ['2001:db8::1', '2001:db8::1'],
      ['[2001:db8::1]:443', '2001:db8::1'],
      ['2001:db8::1[4500]', '2001:db8::1'],
      ['::ffff:198.51.100.7', '198.51.100.7'],
      ['::198.51.100.7', undefined],
      ['::c633:6407', undefined],
      ['[::198.51.100.7]:443', undefined],
      ['00-11-22-33-44-55', undefined],
      ['00:11:22:33:44:55', undefined],
      ['+14155550123', undefined],
      ['127.1', undefined],
      ['0x7f.0.0.1', undefined],
      ['999.1.1.1', undefined],
      ['', undefined],
      ['1.2.3.4:99999999', undefined],
    ];
    for (const [text, ip] of cases) assert.equal(clientIpOf(text), ip, text);
    assert.equal(clientIpOf(undefined), undefined);
  });
});
