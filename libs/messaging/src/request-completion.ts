import { RequestOne } from '@nats-io/nats-core/internal';

/**
 * nats.js 3.4 completes every request, a JetStream publish waiting for its ack included, by
 * calling `cancel()`, which builds a "cancelled" RequestError (a stack capture) to reject a promise
 * that has already settled: about 5 % of auth-challenge's CPU, for nothing. Once a reply (or an
 * error) has settled the request, the clean-up here skips that Error; timeouts and explicit
 * cancellations are untouched. Installed once, only on the shape it was written for: if a future
 * nats.js changes these methods, it leaves them alone and only the saving is lost.
 */
type Completable = {
  resolver(err: Error | null, msg: unknown): void;
  cancel(err?: Error): void;
  timer?: { cancel(): void };
  mux: { cancel(request: unknown): void };
  deferred: unknown;
};

const PATCHED = Symbol.for('open-mfa.nats-request-completion');

export function skipSettledRequestErrors(): void {
  const proto = RequestOne.prototype as unknown as Completable & { [PATCHED]?: true };
  if (proto[PATCHED] || typeof proto.resolver !== 'function' || typeof proto.cancel !== 'function') return;
  if (!/new errors_1\.RequestError\("cancelled"\)/.test(proto.cancel.toString())) return;
  const settled = new WeakSet<object>();
  const resolver = proto.resolver;
  const cancel = proto.cancel;
  proto.resolver = function (this: Completable, err, msg) {
    settled.add(this);
    resolver.call(this, err, msg);
  };
  proto.cancel = function (this: Completable, err?: Error) {
    if (err === undefined && settled.has(this)) {
      this.timer?.cancel();
      this.mux.cancel(this);
      return;
    }
    cancel.call(this, err);
  };
  proto[PATCHED] = true;
}
