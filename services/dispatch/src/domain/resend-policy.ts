/**
 * How a resend of an SMS code (challenge.resend) goes out. Pure: what the earlier sends left in
 * Redis and the providers' circuit states are passed in.
 */

/** What an earlier send of the challenge left: a claim (see dispatch's SendGuard), or nothing. */
export interface EarlierSend {
  kind: 'sent' | 'in_progress' | 'claimed';
  provider?: string;
  /** Where the challenge's ChallengeStarted is in MFA_CHALLENGES. */
  seq?: number;
}

export type ResendSource =
  /** The start is at `startedSeq`; `lastProvider` sent the code last (undefined: no send succeeded). */
  | { kind: 'found'; startedSeq: number; lastProvider: string | undefined }
  /**
   * An earlier send is calling a provider, or the start's has not settled (not taken up yet):
   * nothing says yet where the code is, or which provider comes next.
   */
  | { kind: 'unsettled' };

/**
 * Where the code of a resend is, from the earlier sends (the start's first, then each resend's)
 * and the sequence a send that no provider took left on the challenge (`failedSeq`). The sends of
 * one code go one after the other: never two at once, and each knows which provider sent last.
 */
export function resendSource(earlier: ReadonlyArray<EarlierSend | undefined>, failedSeq: number | undefined): ResendSource {
  if (earlier.some((s) => s !== undefined && s.kind !== 'sent')) return { kind: 'unsettled' };
  const sent = earlier.filter((s): s is EarlierSend => s?.kind === 'sent');
  const startedSeq = sent.find((s) => s.seq !== undefined)?.seq ?? failedSeq;
  if (startedSeq === undefined) return { kind: 'unsettled' };
  return { kind: 'found', startedSeq, lastProvider: sent.at(-1)?.provider };
}

/**
 * The providers of a resend, in order: the one after the provider that sent last in SMS_PROVIDERS'
 * order, wrapping round (the code that went through one may not have arrived; with one provider,
 * that one again); from the first when none sent. Providers whose circuit is open go last: skipped
 * for the first try, still reached by the failover if every other one fails.
 */
export function resendProviders(providers: readonly string[], lastSent: string | undefined, open: ReadonlySet<string>): string[] {
  const after = lastSent === undefined ? 0 : providers.indexOf(lastSent) + 1;
  const rotated = [...providers.slice(after), ...providers.slice(0, after)];
  return [...rotated.filter((p) => !open.has(p)), ...rotated.filter((p) => open.has(p))];
}
