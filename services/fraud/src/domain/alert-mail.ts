import type { EventOf } from '@mfa/contracts';

const SOURCES = { app: 'the authenticator app', phone: 'a phone call (fraud code)', idp: 'the identity provider' } as const;

/**
 * The e-mail of a fraud alert, to an administrator: who, when, from where, through what, reported
 * how, and what was done. Plain text: the user id, application and comment are the requester's
 * strings and are never interpreted as markup; control characters are shown as escapes.
 */
export function alertMail(event: EventOf<'FraudReported'>): { subject: string; text: string } {
  const d = event.data;
  const actions = [
    d.challengeDenied ? 'the pending sign-in was denied' : undefined,
    d.blocked ? `the user is blocked${d.blockedUntil ? ` until ${d.blockedUntil}` : ''}` : undefined,
  ].filter((a): a is string => a !== undefined);
  const lines = [
    `A sign-in was reported as fraud in tenant ${shown(event.tenantId)}.`,
    '',
    `User:            ${shown(d.userId)}`,
    `Time:            ${event.occurredAt} (UTC)`,
    `Client IP:       ${d.clientIp ? shown(d.clientIp) : 'not known'}`,
    `Application:     ${d.application ? shown(d.application) : 'not known'}`,
    `Reported from:   ${SOURCES[d.source]}`,
    ...(d.challengeId ? [`Challenge:       ${shown(d.challengeId)}`] : []),
    `Action taken:    ${actions.length > 0 ? actions.join('; ') : 'none (auto-block is off and no pending sign-in was named)'}`,
    ...(d.comment ? [`Comment:         ${shown(d.comment)}`] : []),
    `Alert:           ${d.alertId}`,
    '',
    'If the user did not start this sign-in, their password is probably known to someone else.',
  ];
  return { subject: `Fraud alert: sign-in of ${shown(d.userId).slice(0, 120)} reported (${d.source})`, text: `${lines.join('\n')}\n` };
}

/** A requester's string, one line, control characters escaped. */
const shown = (value: string) => value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
