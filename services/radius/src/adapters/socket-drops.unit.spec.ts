import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { dropsOfPort } from './socket-drops.js';

// As Linux prints /proc/net/udp: the RADIUS socket on 127.0.0.1:1812 (0x0714) with 3614 drops,
// another on 0.0.0.0:5353, and a socket connected from port 1812 of another address.
const table = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  245: 0100007F:0714 00000000:0000 07 00000000:00014500 00:00000000 00000000     0        0 912345 2 0000000000000000 3614
  301: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   107        0 18821 2 0000000000000000 12
`;

describe('kernel drops of a UDP socket (/proc/net/udp)', () => {
  it('reads the drops column of the socket bound to the port', () => {
    assert.equal(dropsOfPort(table, 1812), 3614);
    assert.equal(dropsOfPort(table, 5353), 12);
  });

  it('has no reading for a port no socket is bound to, or an unreadable table', () => {
    assert.equal(dropsOfPort(table, 1813), undefined);
    assert.equal(dropsOfPort('', 1812), undefined);
    assert.equal(dropsOfPort('header only\n', 1812), undefined);
  });

  it('reads IPv6 tables, whose addresses are longer', () => {
    const udp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   12: 00000000000000000000000000000000:0714 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 7
`;
    assert.equal(dropsOfPort(udp6, 1812), 7);
  });
});
