// node:test reporter that ends the run with the one line CI reads: "N passed, N failed, N skipped".
export default async function* summary(source) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const data = event.data;
    if (data.details?.type === 'suite') {
      // A suite that failed outside its tests (a hook, a crash) still counts as a failure.
      if (event.type === 'test:fail' && data.details?.error?.failureType !== 'subtestsFailed') failed++;
      continue;
    }
    if (data.skip !== undefined || data.todo !== undefined) skipped++;
    else if (event.type === 'test:pass') passed++;
    else failed++;
  }
  yield `\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
}
