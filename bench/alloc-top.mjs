#!/usr/bin/env node
// `node bench/alloc-top.mjs prof/alloc-*.heapprofile [--top 25]`: where a sampling allocation profile's
// bytes were allocated (profiles from bench/alloc-profile.cjs). For each profile: MB per second, the
// share by package (the innermost library on the stack, else our code or Node's own), the top frames
// by bytes allocated in them, and the top stacks (six frames, innermost first).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
const top = Number(values.top);

const short = (url) => url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/(libs|services)\//, '$1/');
const frameName = ({ functionName, url, lineNumber }) => `${functionName || '(anonymous)'} ${url ? `${short(url)}:${lineNumber + 1}` : ''}`.trim();

function areaOf(stack) {
  for (let i = stack.length - 1; i >= 0; i--) {
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(stack[i].url);
    if (pkg) return pkg[1];
  }
  for (let i = stack.length - 1; i >= 0; i--) {
    const ours = /\/(libs|services)\/([^/]+)\//.exec(stack[i].url);
    if (ours) return `${ours[1]}/${ours[2]}`;
  }
  return stack.some((f) => f.url.startsWith('node:')) ? 'node:*' : '(other)';
}

const add = (map, key, bytes) => map.set(key, (map.get(key) ?? 0) + bytes);
const print = (title, map, total) => {
  console.log(`  ${title}`);
  for (const [key, bytes] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`    ${((100 * bytes) / total).toFixed(1).padStart(5)} %  ${key}`);
};

for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const areas = new Map();
  const frames = new Map();
  const stacks = new Map();
  let total = 0;
  const walk = (node, stack) => {
    const here = [...stack, node.callFrame];
    if (node.selfSize > 0) {
      total += node.selfSize;
      add(areas, areaOf(here), node.selfSize);
      add(frames, frameName(node.callFrame), node.selfSize);
      add(stacks, here.slice(-6).reverse().map(frameName).join(' < '), node.selfSize);
    }
    for (const child of node.children) walk(child, here);
  };
  walk(profile.head, []);
  const seconds = (profile.durationMs ?? 20_000) / 1000;
  console.log(`${file}: ${(total / 1e6 / seconds).toFixed(1)} MB/s sampled (${profile.keep ?? 'all'} allocations)`);
  print('by package', areas, total);
  print('by frame', frames, total);
  print('by stack', stacks, total);
}
