import twilio from 'twilio';

/**
 * Whether Twilio signed a webhook: X-Twilio-Signature is the HMAC-SHA1, under the account's auth
 * token, of the URL Twilio requested followed by the POST parameters sorted by name (checked by
 * Twilio's own SDK, in constant time). Without a token nothing is ever accepted, and neither is a
 * request whose URL cannot be what Twilio requested (no public base configured, a malformed
 * request line): the SDK would throw on it, and an unsigned request must be a 403, not a 500.
 */
export function signedByTwilio(authToken: string | undefined, request: { url: string; signature: string | undefined; params: Record<string, string> }): boolean {
  if (authToken === undefined || request.signature === undefined || !URL.canParse(request.url)) return false;
  try {
    return twilio.validateRequest(authToken, request.signature, request.url, request.params);
  } catch {
    return false;
  }
}
