import type { ChallengeReason, ChallengeStartReply, ChallengeVerifyReply, ErrorCode, Method } from '@mfa/contracts';

/**
 * What the RADIUS front answers, decided from the challenge API's replies. The Reply-Message
 * texts are shown by the VPN client to the user (most VPNs show them; some only log them): they
 * say what to do or why not, never a code and never more of a phone number than its last digits.
 */
export type Decision =
  | { kind: 'accept'; message?: string | undefined }
  | { kind: 'reject'; message: string }
  /** Access-Challenge with a new State for this challenge: the user types the code. */
  | { kind: 'challenge'; challengeId: string; method: Method; message: string; expiresAt: string }
  /** Push or a call: wait for the outcome. */
  | { kind: 'wait'; challengeId: string; method: Method }
  /** otp mode: the first request's password is the code of the TOTP challenge just started. */
  | { kind: 'verify'; challengeId: string }
  /** No answer at all: the challenge API could not be reached, so the NAS may fail over to another server. */
  | { kind: 'silent'; why: string };

const REASON_TEXT: Partial<Record<ChallengeReason, string>> = {
  invalid_code: 'Wrong code.',
  too_many_attempts: 'Too many wrong codes. Sign in again.',
  expired: 'The code expired. Sign in again.',
  code_reused: 'That code was already used. Wait for the next one and sign in again.',
  no_method_registered: 'No MFA method is registered for you. Register one, then sign in again.',
  method_not_registered: 'That MFA method is not registered for you.',
  method_disabled: 'None of your MFA methods can be used here.',
  country_not_allowed: 'Your phone number cannot be used for MFA here. Use another method.',
  delivery_failed: 'The code could not be delivered. Sign in again, or use another method.',
  locked_out: 'Too many wrong codes: you are locked out for a while.',
  user_blocked: 'Your account is blocked from MFA. Contact your administrator.',
  fraud_reported: 'This sign-in was reported as fraud.',
  denied_by_user: 'The sign-in was denied in the app.',
  push_suspended: 'Push notifications are suspended for you after repeated denials. Contact your administrator.',
  ip_locked: 'Sign-ins from your address are locked for a while.',
  app_password_required: 'An app password is required.',
};

const reasonText = (reason: ChallengeReason | undefined, fallback: string) => (reason && REASON_TEXT[reason]) || fallback;

/** The prompt of a code challenge. */
export function promptFor(method: Method, sentTo: string | undefined): string {
  if (method === 'sms') return `Enter the code sent by SMS to ${sentTo ?? 'your phone'}.`;
  return 'Enter the code from your authenticator app or hardware token.';
}

/** After challenge.start. `otp`: the client cannot answer an Access-Challenge (RADIUS_PASSWORD_MODE=otp). */
export function afterStart(reply: ChallengeStartReply & { sentTo?: string }, otp: boolean): Decision {
  switch (reply.status) {
    case 'approved':
      return { kind: 'accept' };
    case 'registration_required':
      if (otp && reply.reason === 'method_disabled') {
        return { kind: 'reject', message: 'No MFA method you have can be used by this VPN: SMS codes need a VPN that asks for the code (challenge mode).' };
      }
      return { kind: 'reject', message: reasonText(reply.reason, 'No MFA method is registered for you. Register one, then sign in again.') };
    case 'denied':
      return { kind: 'reject', message: reasonText(reply.reason, 'The sign-in was denied.') };
    case 'pending': {
      const method = reply.method;
      if (method === 'push' || method === 'voice') return { kind: 'wait', challengeId: reply.challengeId, method };
      if (method === 'totp' && otp) return { kind: 'verify', challengeId: reply.challengeId };
      if (method === 'sms' || method === 'totp') {
        if (otp) return { kind: 'reject', message: 'SMS codes need a VPN that asks for the code (challenge mode).' };
        return { kind: 'challenge', challengeId: reply.challengeId, method, message: promptFor(method, reply.sentTo), expiresAt: reply.expiresAt };
      }
      return { kind: 'reject', message: 'None of your MFA methods can be used here.' };
    }
  }
}

/**
 * After challenge.verify of a typed code. A wrong code while attempts remain asks again (a new
 * State), except in otp mode, where the client cannot be asked.
 */
export function afterVerify(reply: ChallengeVerifyReply, challenge: { challengeId: string; method: Method; expiresAt: string }, otp: boolean): Decision {
  if (reply.status === 'approved') return { kind: 'accept' };
  if (reply.status === 'pending') {
    if (otp) return { kind: 'reject', message: reasonText(reply.reason, 'Wrong code.') };
    return { kind: 'challenge', ...challenge, message: `${reasonText(reply.reason, 'Wrong code.')} ${promptFor(challenge.method, undefined)}` };
  }
  return { kind: 'reject', message: reasonText(reply.reason, 'The sign-in was denied.') };
}

/** After challenge.status while waiting for a push or a call: undefined while it is still pending. */
export function afterWait(reply: ChallengeVerifyReply): Decision | undefined {
  if (reply.status === 'pending') return undefined;
  if (reply.status === 'approved') return { kind: 'accept' };
  return { kind: 'reject', message: reasonText(reply.reason, 'The sign-in was denied.') };
}

/** When waiting ran out (RADIUS_WAIT_SECONDS). */
export const waitedTooLong = (method: Method): Decision => ({
  kind: 'reject',
  message: method === 'push' ? 'The notification was not answered in time. Sign in again.' : 'The call was not answered in time. Sign in again.',
});

/**
 * An error reply of the challenge API. `unavailable` and `internal` (and no reply at all) give no
 * answer, so the NAS tries its next RADIUS server; the rest are about this user or request.
 */
export function afterError(code: ErrorCode, retryAfterSeconds?: number): Decision {
  switch (code) {
    case 'not_found':
      return { kind: 'reject', message: 'Unknown user.' };
    case 'rate_limited':
      return { kind: 'reject', message: `Too many sign-ins. Try again${retryAfterSeconds ? ` in ${retryAfterSeconds} s` : ' later'}.` };
    case 'conflict':
      return { kind: 'reject', message: 'This sign-in is already over. Sign in again.' };
    case 'invalid_request':
      return { kind: 'reject', message: 'The sign-in request was not valid.' };
    case 'forbidden':
      // The client's API key is wrong or lacks the challenges scope: an operator's mistake, logged.
      return { kind: 'reject', message: 'The MFA service refused this RADIUS client. Contact your administrator.' };
    case 'unavailable':
    case 'internal':
      return { kind: 'silent', why: code };
  }
}
