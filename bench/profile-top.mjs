#!/usr/bin/env node
// `node bench/profile-top.mjs prof/*.cpuprofile [--top 25]`: where a V8 CPU profile's time goes.
// For each profile: the share of busy time (idle excluded) by area (our code, each library, Node's
// own JavaScript, GC, native) and the top frames by self time, with the file they are in.
// Profiles come from `STACK_NODE_ARGS="--cpu-prof --cpu-prof-dir=prof" npm run bench -- …`.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, inclusive: { type: 'boolean', default: false } } });
const top = Number(values.top);

/** The area a frame's time is counted in: a library by package name, or what the runtime does. */
function areaOf(frame) {
  const { url, functionName } = frame.callFrame;
  if (functionName === '(idle)') return '(idle)';
  if (functionName === '(garbage collector)') return 'GC';
  if (functionName === '(program)') return 'native (program)';
  if (!url) return `native ${functionName || '(anonymous)'}`.slice(0, 40);
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) {
    const name = pkg[1];
    if (name.startsWith('@opentelemetry/')) return '@opentelemetry/*';
    if (name.startsWith('@nestjs/')) return '@nestjs/*';
    if (name.startsWith('@nats-io/')) return '@nats-io/*';
    return name;
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const ours = /\/(libs|services)\/([^/]+)\//.exec(url);
  if (ours) return `${ours[1]}/${ours[2]}`;
  return url;
}

for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  // Samples and timeDeltas: each sample's time is the delta to the next one.
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    const dt = timeDeltas[i + 1] ?? 0;
    self.set(samples[i], (self.get(samples[i]) ?? 0) + dt);
  }
  let total = 0;
  let idle = 0;
  const areas = new Map();
  const frames = new Map();
  for (const [id, us] of self) {
    const node = byId.get(id);
    const area = areaOf(node);
    total += us;
    if (area === '(idle)') {
      idle += us;
      continue;
    }
    areas.set(area, (areas.get(area) ?? 0) + us);
    const { functionName, url, lineNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'}  ${url ? `${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(libs|services)\//, '$1/')}:${lineNumber + 1}` : ''}`;
    frames.set(key, (frames.get(key) ?? 0) + us);
  }
  const busy = total - idle;
  const pct = (us) => `${((100 * us) / busy).toFixed(1).padStart(5)} %`;
  process.stdout.write(`\n${basename(file)}: ${(total / 1e6).toFixed(1)} s profiled, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / total).toFixed(0)} %)\n`);
  process.stdout.write('  by area (share of busy time):\n');
  for (const [area, us] of [...areas].sort((a, b) => b[1] - a[1]).slice(0, 18)) process.stdout.write(`    ${pct(us)}  ${area}\n`);
  process.stdout.write(`  top ${top} frames by self time:\n`);
  for (const [key, us] of [...frames].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`    ${pct(us)}  ${key}\n`);
  if (!values.inclusive) continue;
  // Inclusive: a frame's self time plus its callees', each sample counted once per frame even when
  // the frame recurses.
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map();
  for (const [id, us] of self) {
    if (areaOf(byId.get(id)) === '(idle)') continue;
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const { functionName, url, lineNumber } = byId.get(at).callFrame;
      if (!url) continue;
      const key = `${functionName || '(anonymous)'}  ${url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(libs|services)\//, '$1/')}:${lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  process.stdout.write(`  top ${top} frames by inclusive time:\n`);
  for (const [key, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`    ${pct(us)}  ${key}\n`);
}
