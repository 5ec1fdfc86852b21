import { readdirSync, readFileSync } from 'node:fs';

/** Jiffies per second of /proc/<pid>/stat's utime and stime (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

const PAGE_BYTES = 4096;

/**
 * Every process's CPU time so far (seconds) and resident memory now (MiB), by what it is: a service
 * (`services/<name>/dist`), the floor, nats-server, redis-server, postgres (all its backends
 * together), or this bench (the IdP). The difference of two CPU readings is where the machine's
 * CPU went in between.
 */
export function processSnapshot(): { cpu: Map<string, number>; rss: Map<string, number> } {
  const byGroup = new Map<string, number>();
  const rss = new Map<string, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    let cmdline: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
    } catch {
      continue; // gone meanwhile
    }
    const group = groupOf(Number(entry), cmdline);
    if (!group) continue;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const seconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
    byGroup.set(group, (byGroup.get(group) ?? 0) + seconds);
    // Field 24: resident set size in pages.
    rss.set(group, (rss.get(group) ?? 0) + (Number(fields[21]) * PAGE_BYTES) / 2 ** 20);
  }
  return { cpu: byGroup, rss };
}

function groupOf(pid: number, cmdline: string): string | undefined {
  if (pid === process.pid) return 'bench (IdP)';
  const service = /services\/([a-z-]+)\/dist\/main\.js/.exec(cmdline);
  if (service) return service[1];
  if (cmdline.includes('bench/dist/floor.js')) return 'floor';
  if (/(^|\/)nats-server /.test(cmdline)) return 'nats-server';
  if (/(^|\/)redis-server /.test(cmdline)) return 'redis-server';
  if (/^postgres[: ]|\/postgres /.test(cmdline)) return 'postgres';
  return undefined;
}

/**
 * The seconds all CPUs of the machine were busy so far (/proc/stat's first line: every state but
 * idle and iowait, guest time being inside user already). Against the groups' sum over the same
 * window it shows what ran outside the stack: kernel threads, other processes, interrupts.
 */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / TICKS_PER_SECOND;
}

/** CPU seconds per group between two snapshots (a process started in between counts from 0). */
export function cpuBetween(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const used = new Map<string, number>();
  for (const [group, seconds] of after) used.set(group, Math.max(0, seconds - (before.get(group) ?? 0)));
  return used;
}
