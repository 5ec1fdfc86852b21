/**
 * What a fake vendor received, in order, with waiting for what has not arrived yet: each
 * recorded item wakes the waiters whose predicate it matches.
 */
export class Received<T> {
  readonly items: T[] = [];
  private waiters: Array<{ predicate: (item: T) => boolean; resolve: (item: T) => void }> = [];

  constructor(private readonly what: string) {}

  record(item: T): void {
    this.items.push(item);
    for (const waiter of [...this.waiters]) {
      if (!waiter.predicate(item)) continue;
      this.waiters = this.waiters.filter((w) => w !== waiter);
      waiter.resolve(item);
    }
  }

  /** Resolves with the first item (already received or future) that matches. */
  waitFor(predicate: (item: T) => boolean, timeoutMs = 10_000): Promise<T> {
    const found = this.items.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${this.what}: nothing matching within ${timeoutMs} ms`));
      }, timeoutMs).unref();
    });
  }
}
