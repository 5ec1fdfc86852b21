import type { NatsConnection } from '@nats-io/nats-core';
import { Headers } from '@mfa/contracts';
import { signInternalRequest, type Keyring } from '@mfa/crypto';
import { requestJson } from '@mfa/messaging';

/**
 * The services' requests to one another (`mfa.int.`), signed with the master key
 * (`Mfa-Internal`, libs/crypto internal-requests.ts): ApiKeyGuard answers no unsigned one, so a
 * caller that NATS permissions would let through (a flat NATS user, a client granted `mfa.>`)
 * still cannot approve a call, test a PIN, report fraud or activate a device.
 */
export class InternalRequests {
  constructor(
    private readonly nc: NatsConnection,
    private readonly keyring: Keyring,
  ) {}

  /** The reply to `body` on `subject` (an error reply comes back as a reply: check its `error`). */
  request<T>(subject: string, body: unknown, options: { timeoutMs: number }): Promise<T> {
    const data = JSON.stringify(body);
    return requestJson<T>(this.nc, subject, data, { timeoutMs: options.timeoutMs, headers: { [Headers.internal]: signInternalRequest(this.keyring, subject, data, Date.now()) } });
  }
}
