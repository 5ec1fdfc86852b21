/**
 * At most `perSecond` calls of `take()` answer true in each clock second: what bounds the reads of
 * the log that ids nobody knows (made-up keys, tenants) can cause, however many requests carry them.
 */
export class LookupBudget {
  private window = { second: 0, count: 0 };

  constructor(private readonly perSecond: number) {}

  take(): boolean {
    const second = Math.floor(Date.now() / 1000);
    if (this.window.second !== second) this.window = { second, count: 0 };
    return ++this.window.count <= this.perSecond;
  }
}
