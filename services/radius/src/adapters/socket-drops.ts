import { readFile } from 'node:fs/promises';

/**
 * Datagrams the kernel dropped for a UDP socket because its receive buffer was full: Linux counts
 * them per socket in the last column of /proc/net/udp (udp6 for IPv6 sockets). Nothing else tells:
 * the process never sees them, and the NAS only sees its request go unanswered.
 *
 * The socket is found by its local port (the RADIUS port is bound by one socket only). Elsewhere
 * than on Linux, or if the file cannot be read, there is no reading.
 */
export async function kernelDrops(family: 'udp4' | 'udp6', port: number): Promise<number | undefined> {
  let table: string;
  try {
    table = await readFile(family === 'udp6' ? '/proc/net/udp6' : '/proc/net/udp', 'utf8');
  } catch {
    return undefined;
  }
  return dropsOfPort(table, port);
}

/**
 * The drops of the socket bound to `port` in a /proc/net/udp table (summed, should several
 * match), or undefined when none is there. A line: `sl local_address rem_address st tx:rx tr
 * tm->when retrnsmt uid timeout inode ref pointer drops`, the address as HEX_IP:HEX_PORT.
 */
export function dropsOfPort(table: string, port: number): number | undefined {
  let found: number | undefined;
  for (const line of table.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 13) continue;
    const local = fields[1]!;
    const localPort = Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
    if (localPort !== port) continue;
    const drops = Number(fields[fields.length - 1]);
    if (Number.isSafeInteger(drops)) found = (found ?? 0) + drops;
  }
  return found;
}
