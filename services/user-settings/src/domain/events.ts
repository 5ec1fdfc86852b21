import type { EventOf, EventType } from '@mfa/contracts';

/**
 * What a decider returns and what evolve folds: the type, data and time of an event, without the
 * envelope fields (id, tenant, aggregate, trace context) that the application layer adds when it
 * appends. A stored envelope is structurally one of these, so evolve folds both.
 */
export type DomainEvent<T extends EventType> = T extends unknown ? Pick<EventOf<T>, 'type' | 'data' | 'occurredAt'> : never;

export function domainEvent<T extends EventType>(type: T, data: EventOf<T>['data'], now: Date): DomainEvent<T> {
  return { type, data, occurredAt: now.toISOString() } as DomainEvent<T>;
}

/** Emmett-style decider: pure, time passed in; `accepts` tells its events among a stream's. */
export interface Decider<Command, State, Event extends { type: string }> {
  decide(command: Command, state: State, now: Date): Event[];
  evolve(state: State, event: Event): State;
  initialState(): State;
  accepts(event: { type: string }): event is Event;
}
