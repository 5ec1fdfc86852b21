import type { VoiceMessageType } from './voice-messages.js';

/** Prompts a call makes at most (the greeting and two retries) before it gives up on the user. */
export const MAX_PROMPTS = 3;

export interface CallSettings {
  /** PIN mode: the user's PIN then # approves, instead of # alone. */
  pinMode: boolean;
  /** The digit that, then #, reports fraud; null when the tenant's fraud alerts are off. */
  fraudCode: string | null;
}

/** What the user did at one prompt, as Twilio's `<Gather>` reports it to its action URL. */
export interface GatherResult {
  /** The keys pressed before the finish key (never the finish key itself); '' for none. */
  digits: string;
  /** '#' when the user ended with the pound key; '' when the prompt timed out (actionOnEmptyResult). */
  finishedOnKey: string;
  /** Which prompt this answers (1 = the greeting). */
  prompt: number;
}

export type CallStep =
  /** # alone, in standard mode: the challenge is approved. */
  | { kind: 'approve' }
  /** Digits then #, in PIN mode: the PIN is checked (user-settings); right approves, wrong counts as a denial. */
  | { kind: 'check_pin'; pin: string }
  /** The fraud code then #: a fraud alert, the challenge denied. */
  | { kind: 'fraud' }
  /** Nothing usable: ask again. */
  | { kind: 'prompt_again'; prompt: number }
  /** Nothing usable after the last prompt: the user never answered; the IdP may fall back. */
  | { kind: 'give_up' };

/**
 * One prompt's outcome. The fraud code wins over everything (a user who did not start the sign-in
 * must be able to report it in either mode); # alone approves only in standard mode; a PIN is 4 to
 * 8 digits. Anything else (silence, other keys) prompts again, up to MAX_PROMPTS.
 */
export function callStep(settings: CallSettings, result: GatherResult): CallStep {
  const pound = result.finishedOnKey === '#';
  if (pound && settings.fraudCode !== null && result.digits === settings.fraudCode) return { kind: 'fraud' };
  if (pound && !settings.pinMode && result.digits === '') return { kind: 'approve' };
  if (pound && settings.pinMode && /^\d{4,8}$/.test(result.digits)) return { kind: 'check_pin', pin: result.digits };
  return result.prompt < MAX_PROMPTS ? { kind: 'prompt_again', prompt: result.prompt + 1 } : { kind: 'give_up' };
}

/** The message that opens a prompt: the greeting first (with the fraud sentence when alerts are on), then the retry. */
export function promptMessage(settings: CallSettings, prompt: number): VoiceMessageType {
  if (prompt > 1) return settings.pinMode ? 'retryPin' : 'retryStandard';
  if (settings.pinMode) return settings.fraudCode !== null ? 'fraudGreetingPin' : 'greetingPin';
  return settings.fraudCode !== null ? 'fraudGreetingStandard' : 'greetingStandard';
}
