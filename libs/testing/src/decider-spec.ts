import assert from 'node:assert/strict';
import { ContractError, type ErrorCode } from '@mfa/contracts';

/** What a decider spec needs of a decider; structural, so any service's decider fits. */
interface SpecifiedDecider<C, S, E> {
  decide(command: C, state: S, now: Date): E[];
  evolve(state: S, event: E): S;
  initialState(): S;
}

/**
 * Given/when/then for deciders (after Emmett's DeciderSpecification): given past events, when a
 * command arrives at `now`, then these events, nothing, or a contract error.
 */
export function deciderSpec<C, S, E>(decider: SpecifiedDecider<C, S, E>) {
  return {
    given(events: E[] = []) {
      return {
        when(command: C, now: Date) {
          const run = () => decider.decide(command, events.reduce(decider.evolve, decider.initialState()), now);
          return {
            then(expected: E[]): void {
              assert.deepEqual(run(), expected);
            },
            thenNothing(): void {
              assert.deepEqual(run(), []);
            },
            thenThrows(code: ErrorCode, message?: RegExp): void {
              assert.throws(run, (error: unknown) => {
                assert.ok(error instanceof ContractError, `expected a ContractError, got ${String(error)}`);
                assert.equal(error.code, code);
                if (message) assert.match(error.message, message);
                return true;
              });
            },
          };
        },
      };
    },
  };
}
