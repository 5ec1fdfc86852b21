import { randomUUID } from 'node:crypto';
import { Global, Inject, Injectable, Module, type DynamicModule, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { NoRespondersError, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { z } from 'zod';
import type { Keyring } from '@mfa/crypto';
import { isReplySubject, type NatsClients } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import { NATS } from './tokens.js';

/**
 * Every service must run with the same master key: a service with another key seals secrets the
 * others cannot open, hashes codes they cannot check and looks users up under Redis tags they
 * never wrote. Each instance therefore answers on this subject with its key id (`kid`, a one-way
 * fingerprint of the key, already public in every sealed secret), every instance, no queue group,
 * and at boot asks the running ones before it serves, refusing to start on a mismatch.
 */
export const KEYRING_FINGERPRINT_SUBJECT = 'mfa.int.keyring.fingerprint';

/** The service's keyring, provided to every module by runService. */
export const KEYRING = Symbol('KEYRING');

/** How long the boot check collects answers. */
const COLLECT_MS = 300;

const Fingerprint = z.object({
  kid: z.string().min(1).max(64),
  /** Key ids of MFA_PREVIOUS_ENCRYPTION_KEYS: a peer still on one of them is rotating, not misconfigured. */
  previous: z.array(z.string().max(64)).max(64),
  service: z.string().max(128),
  instance: z.string().max(256),
  /** Random per instance, so an instance ignores its own question. */
  bootId: z.string().max(64),
});
export type Fingerprint = z.infer<typeof Fingerprint>;

export class KeyringMismatchError extends Error {
  override name = 'KeyringMismatchError';
}

interface KeyringCheckOptions {
  keyring: Keyring;
  service: string;
  instance: string;
  log: Logger;
}

const encoder = new TextEncoder();

function parseFingerprint(data: Uint8Array): Fingerprint | undefined {
  try {
    const parsed = Fingerprint.safeParse(JSON.parse(new TextDecoder().decode(data)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

const peerText = (peer: Fingerprint) => `${peer.service} (${peer.instance}) has ${peer.kid}`;

/**
 * The boot check and the responder. `start()` subscribes (so this instance answers from then on),
 * then asks, collects answers for 300 ms and throws KeyringMismatchError, naming both
 * fingerprints, if any running instance has another key: another current key, unless it is one
 * of our previous keys (that peer has not been rotated yet).
 */
export class KeyringCheck {
  private subscription: Subscription | undefined;
  private readonly self: Fingerprint;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: KeyringCheckOptions,
  ) {
    this.self = {
      kid: options.keyring.kid,
      previous: options.keyring.previous.map((k) => k.kid),
      service: options.service,
      instance: options.instance,
      bootId: randomUUID(),
    };
  }

  get kid(): string {
    return this.self.kid;
  }

  /** Answers from now on, then checks the running instances; throws on a mismatch. */
  async start(): Promise<void> {
    this.answer();
    await this.nc.flush();
    const peers = await this.ask();
    const ours = new Set([this.self.kid, ...this.self.previous]);
    const mismatched = peers.filter((peer) => !ours.has(peer.kid));
    if (mismatched.length > 0) {
      throw new KeyringMismatchError(
        `master key mismatch: this ${this.self.service} instance has key fingerprint ${this.self.kid}, but ${mismatched.map(peerText).join(', ')}. ` +
          'Every service must run with the same MFA_ENCRYPTION_KEY (an older key belongs in MFA_PREVIOUS_ENCRYPTION_KEYS); not serving.',
      );
    }
    const rotating = peers.filter((peer) => peer.kid !== this.self.kid);
    if (rotating.length > 0) {
      // Internal requests are verified under the current key only (internal-requests.ts): until
      // those stop, the requests between them and this instance are refused.
      this.options.log.warn('services still run with a previous master key: requests between the services fail until they are stopped (a rotation stops every service)', {
        kid: this.self.kid,
        peers: rotating.map(peerText),
      });
    }
    this.options.log.info('master key shared with the running services', { kid: this.self.kid, peers: peers.length });
  }

  stop(): void {
    this.subscription?.unsubscribe();
    this.subscription = undefined;
  }

  private answer(): void {
    const reply = encoder.encode(JSON.stringify(this.self));
    this.subscription = this.nc.subscribe(KEYRING_FINGERPRINT_SUBJECT, {
      callback: (error, msg) => {
        if (error) return this.options.log.warn('master key responder stopped', { error });
        const asker = parseFingerprint(msg.data);
        if (asker?.bootId === this.self.bootId) return;
        // Only to an inbox, as the transport (@mfa/messaging reply-subject.ts): a reply goes out with the
        // service's permissions, which include the event subjects and the JetStream API.
        if (msg.reply && isReplySubject(msg.reply)) msg.respond(reply);
        if (!asker || asker.kid === this.self.kid) return;
        const fields = { ours: this.self.kid, theirs: asker.kid, service: asker.service, instance: asker.instance };
        if (asker.previous.includes(this.self.kid)) {
          this.options.log.warn('a service started with a newer master key: restart this one with it (rotation)', fields);
        } else {
          this.options.log.error(
            `master key mismatch: ${asker.service} (${asker.instance}) started with key fingerprint ${asker.kid}, this instance has ${this.self.kid}; it will refuse to serve`,
            fields,
          );
        }
      },
    });
  }

  private ask(): Promise<Fingerprint[]> {
    return askRunningKeyrings(this.nc, this.self, this.options.log).catch((error: unknown) => {
      throw new KeyringMismatchError('could not compare the master key with the running services', { cause: error });
    });
  }
}

/**
 * The key fingerprints of the running instances, as the boot check asks for them (`asker`: the
 * asking process's own, which the instances compare with theirs); empty when none runs.
 */
export async function askRunningKeyrings(nc: NatsConnection, asker: Fingerprint, log: Logger, collectMs = COLLECT_MS): Promise<Fingerprint[]> {
  const peers: Fingerprint[] = [];
  try {
    const replies = await nc.requestMany(KEYRING_FINGERPRINT_SUBJECT, JSON.stringify(asker), { strategy: 'timer', maxWait: collectMs });
    for await (const msg of replies) {
      const peer = parseFingerprint(msg.data);
      if (peer) peers.push(peer);
      else log.warn('unreadable answer to the master key check ignored', { subject: KEYRING_FINGERPRINT_SUBJECT });
    }
  } catch (error) {
    if (!(error instanceof NoRespondersError)) throw error;
  }
  return peers;
}

const OPTIONS = Symbol('KEYRING_CHECK_OPTIONS');

/** Runs the check in init, before the modules that import it start anything of their own. */
@Injectable()
class KeyringCheckLifecycle implements OnModuleInit, OnModuleDestroy {
  private check: KeyringCheck | undefined;
  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(OPTIONS) private readonly options: KeyringCheckOptions,
  ) {}

  async onModuleInit(): Promise<void> {
    this.check = new KeyringCheck(this.nats.nc, this.options);
    try {
      await this.check.start();
    } catch (error) {
      this.check.stop();
      throw error;
    }
  }

  onModuleDestroy(): void {
    this.check?.stop();
  }
}

/**
 * The service's keyring as `KEYRING`, and the master key check. Global, so its init hook runs
 * with the other global modules (after the NATS connection exists, before the service's own
 * modules: projections, caches, consumers) and long before the transport serves. runService adds
 * it to every service.
 */
@Global()
@Module({})
export class KeyringModule {
  static forRoot(options: KeyringCheckOptions): DynamicModule {
    return {
      module: KeyringModule,
      providers: [{ provide: KEYRING, useValue: options.keyring }, { provide: OPTIONS, useValue: options }, KeyringCheckLifecycle],
      exports: [KEYRING],
    };
  }
}
