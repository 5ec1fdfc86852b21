// Diagnosis: a sampling allocation profile of each service, preloaded with
//   STACK_NODE_ARGS="--require $PWD/bench/alloc-profile.cjs" ALLOC_PROF_DIR=prof npm run bench -- …
// It starts ALLOC_PROF_DELAY_MS after the process (default 30 s: past the stack's start, the seeding
// and the warm-up), samples for ALLOC_PROF_DURATION_MS (default 20 s) and writes
// <dir>/alloc-<service>-<pid>.heapprofile, which `node bench/alloc-top.mjs` reads.
// ALLOC_PROF_KEEP says which collected objects the profile keeps: `all` (default: every allocation,
// which is what makes the scavenges run), `promoted` (what a young-generation collection did not
// free: what it copied and moved to the old generation) or `live` (what is still alive at the end).
const inspector = require('node:inspector');
const fs = require('node:fs');
const path = require('node:path');

const delay = Number(process.env.ALLOC_PROF_DELAY_MS ?? 30_000);
const duration = Number(process.env.ALLOC_PROF_DURATION_MS ?? 20_000);
const dir = process.env.ALLOC_PROF_DIR ?? '.';
const keep = process.env.ALLOC_PROF_KEEP ?? 'all';
const service = path.basename(path.dirname(path.dirname(process.argv[1] ?? 'process')));
const session = new inspector.Session();
session.connect();
setTimeout(() => {
  session.post('HeapProfiler.enable', () =>
    session.post(
      'HeapProfiler.startSampling',
      { samplingInterval: 16_384, includeObjectsCollectedByMajorGC: keep !== 'live', includeObjectsCollectedByMinorGC: keep === 'all' },
      () =>
        setTimeout(
          () =>
            session.post('HeapProfiler.stopSampling', (error, result) => {
              if (error) process.stderr.write(`alloc-profile: ${error.message}\n`);
              else {
                // Never take the service down for a diagnosis: a directory missing is made, any other failure said.
                try {
                  fs.mkdirSync(dir, { recursive: true });
                  fs.writeFileSync(path.join(dir, `alloc-${service}-${process.pid}.heapprofile`), JSON.stringify({ ...result.profile, durationMs: duration, keep }));
                } catch (writeError) {
                  process.stderr.write(`alloc-profile: ${writeError.message}\n`);
                }
              }
            }),
          duration,
        ).unref(),
    ),
  );
}, delay).unref();
