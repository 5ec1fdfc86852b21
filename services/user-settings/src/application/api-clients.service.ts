import {
  conflict,
  ContractError,
  EventSubjects,
  notFound,
  unavailable,
  type ClientItem,
  type ClientsCreateReply,
  type ClientsCreateRequest,
  type ClientsListReply,
  type ClientsListRequest,
  type ClientsRevokeReply,
  type ClientsRevokeRequest,
} from '@mfa/contracts';
import { issueApiKey, type Keyring } from '@mfa/crypto';
import { ConcurrencyError, createEvent, type EventPublisher } from '@mfa/messaging';
import type { ApiClientDirectory, ApiClientRecord } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';

/** At most this many clients (revoked ones included) per tenant: each is held by every instance. */
export const MAX_CLIENTS_PER_TENANT = 200;

interface ApiClientsOptions {
  publisher: EventPublisher;
  directory: ApiClientDirectory;
  keyring: Keyring;
  log: Logger;
  /** Throws `not_found` for a tenant that does not exist. */
  requireTenant: (tenantId: string, now: Date) => Promise<void>;
}

/**
 * clients.create, clients.list and clients.revoke. A client is an aggregate of its own (subject
 * `mfa.evt.client.<clientId>`); the directory every service holds in memory is the read side, so
 * each command waits until this instance's directory has folded in its event before answering.
 */
export class ApiClientsService {
  constructor(private readonly options: ApiClientsOptions) {}

  async create(request: ClientsCreateRequest, now: Date): Promise<ClientsCreateReply> {
    const { tenantId, name, scopes } = request;
    await this.options.requireTenant(tenantId, now);
    if (this.options.directory.list(tenantId).length >= MAX_CLIENTS_PER_TENANT) {
      throw conflict(`a tenant may have at most ${MAX_CLIENTS_PER_TENANT} API clients`);
    }
    const issued = issueApiKey(this.options.keyring);
    const event = createEvent('ApiClientCreated', 1, {
      tenantId,
      aggregateId: issued.clientId,
      now,
      data: { clientId: issued.clientId, name, scopes, keyHash: issued.keyHash },
    });
    const seq = await this.append(EventSubjects.client(issued.clientId), event, 0);
    await this.options.directory.caughtUpTo(seq);
    return { clientId: issued.clientId, apiKey: issued.apiKey, name, scopes, createdAt: event.occurredAt };
  }

  async list(request: ClientsListRequest, now: Date): Promise<ClientsListReply> {
    await this.options.requireTenant(request.tenantId, now);
    const clients = this.options.directory.list(request.tenantId);
    const lastUsed = await this.options.directory.lastUsed(clients.map((c) => c.clientId));
    return { items: clients.map((c) => toItem(c, lastUsed.get(c.clientId))) };
  }

  /** Revoking twice answers the first revocation; every instance refuses the key within a second. */
  async revoke(request: ClientsRevokeRequest, now: Date): Promise<ClientsRevokeReply> {
    const client = await this.options.directory.find(request.clientId);
    // Another tenant's client is as unknown as one that never existed.
    if (!client || client.tenantId !== request.tenantId) throw notFound('unknown client');
    if (client.revokedAt) return { clientId: client.clientId, revokedAt: client.revokedAt };
    const event = createEvent('ApiClientRevoked', 1, {
      tenantId: request.tenantId,
      aggregateId: client.clientId,
      now,
      data: { clientId: client.clientId },
    });
    const seq = await this.append(EventSubjects.client(client.clientId), event, client.seq);
    await this.options.directory.caughtUpTo(seq);
    return { clientId: client.clientId, revokedAt: this.options.directory.get(client.clientId)?.revokedAt ?? event.occurredAt };
  }

  /**
   * A deleted tenant's clients (tenants.delete): each revoked, as clients.revoke does, without the
   * tenant check (the tenant is unknown by then). Answers how many the deletion revoked: those
   * revoked at `deletedAt` or later, by this call or an earlier one (a resumed offboarding).
   */
  async revokeAllOf(tenantId: string, deletedAt: string, now: Date): Promise<number> {
    for (const client of this.options.directory.list(tenantId)) {
      if (client.revokedAt) continue;
      try {
        await this.revoke({ tenantId, clientId: client.clientId }, now);
      } catch (error) {
        // Revoked meanwhile by another request (its event appended first): as good, once this
        // instance's directory has it (tenants.delete's own revocations race the offboarding's, and
        // a revocation the directory has not folded in yet would go uncounted).
        if (!(error instanceof ContractError && error.code === 'conflict')) throw error;
        await this.revocationFoldedIn(client.clientId);
      }
    }
    return this.options.directory.list(tenantId).filter((c) => c.revokedAt !== undefined && c.revokedAt >= deletedAt).length;
  }

  /**
   * Waits (boundedly: the directory's catch-up time) until this instance's directory holds the
   * client's last event in the log, the revocation another request appended: the directory's
   * position passing the client's own last sequence held here says nothing (any later event of
   * any client passes it).
   */
  private async revocationFoldedIn(clientId: string): Promise<void> {
    const seq = await this.options.directory.lastSeqOf(clientId);
    if (seq > 0) await this.options.directory.caughtUpTo(seq);
  }

  private async append(subject: string, event: ReturnType<typeof createEvent>, expectedLastSeq: number): Promise<number> {
    try {
      const ack = await this.options.publisher.publish(subject, event, { expectedLastSubjectSequence: expectedLastSeq });
      return ack.seq;
    } catch (error) {
      if (error instanceof ConcurrencyError) throw conflict('the client changed concurrently; try again');
      this.options.log.warn('API client event not stored', { subject, error });
      throw unavailable('event store unavailable', error);
    }
  }
}

function toItem(client: ApiClientRecord, lastUsedMs: number | undefined): ClientItem {
  return {
    clientId: client.clientId,
    name: client.name,
    scopes: [...client.scopes],
    createdAt: client.createdAt,
    ...(lastUsedMs !== undefined ? { lastUsedAt: new Date(lastUsedMs).toISOString() } : {}),
    ...(client.revokedAt ? { revokedAt: client.revokedAt } : {}),
  };
}
