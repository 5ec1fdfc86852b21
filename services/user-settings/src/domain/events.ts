import type { EventOf, EventType } from '@mfa/contracts';

/** The plaintext shape of a type: version 1, the one whose personal data is in clear. */
type Plain<T extends EventType> = Extract<EventOf<T>, { version: 1 }>;

/**
 * What a decider returns and what evolve folds: the type, data and time of an event, without the
 * envelope fields (id, tenant, aggregate, trace context) that the application layer adds when it
 * appends. The deciders see personal data in clear: a stored v1 envelope is structurally one of
 * these, and the application opens a v2 one into this shape when it loads an aggregate and seals
 * it into v2 when it appends (application/user-events.codec.ts).
 */
export type DomainEvent<T extends EventType> = T extends unknown ? Pick<Plain<T>, 'type' | 'data' | 'occurredAt'> : never;

export function domainEvent<T extends EventType>(type: T, data: Plain<T>['data'], now: Date): DomainEvent<T> {
  return { type, data, occurredAt: now.toISOString() } as DomainEvent<T>;
}

/** Emmett-style decider: pure, time passed in; `accepts` tells its events among a stream's. */
export interface Decider<Command, State, Event extends { type: string }> {
  decide(command: Command, state: State, now: Date): Event[];
  evolve(state: State, event: Event): State;
  initialState(): State;
  accepts(event: { type: string }): event is Event;
}
