import twilio from 'twilio';

/**
 * Whether Twilio signed a webhook: X-Twilio-Signature is the HMAC-SHA1, under the account's auth
 * token, of the URL Twilio requested followed by the POST parameters sorted by name (checked by
 * Twilio's own SDK, in constant time). Without a token nothing is ever accepted.
 */
export function signedByTwilio(authToken: string | undefined, request: { url: string; signature: string | undefined; params: Record<string, string> }): boolean {
  return authToken !== undefined && request.signature !== undefined && twilio.validateRequest(authToken, request.signature, request.url, request.params);
}
