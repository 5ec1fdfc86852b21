/**
 * Reply subjects a service answers: client inboxes (`_INBOX.…`, or a per-IdP prefix such as
 * `_INBOX_<idp>.…`), and those the server writes itself for cross-account service imports
 * (`_R_.…`) and gateways (`$GNR.…`), which no client may set. A reply is published with the
 * service's own NATS permissions, which include the event subjects and the JetStream API: any other
 * reply subject would let a caller that may only send requests have the service write to a stream
 * or call the JetStream API for it (a stream purge takes a JSON body, and any reply is one).
 */
export function isReplySubject(reply: string): boolean {
  return /^(_INBOX(_[^.\s*>]+)?|_R_|\$GNR)\.[^\s*>]/.test(reply);
}
