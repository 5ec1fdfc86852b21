import { createPrivateKey, type KeyObject } from 'node:crypto';
import { z } from 'zod';

/** The fields of a Google service-account key file (JSON) that FCM HTTP v1 needs. */
const ServiceAccountJson = z.object({
  type: z.literal('service_account', { error: 'type must be "service_account" (a key of a service account, not OAuth client credentials)' }),
  project_id: z.string().min(1).max(128),
  private_key_id: z.string().min(1).max(128).optional(),
  private_key: z.string().min(1),
  client_email: z.string().min(3).max(320),
  token_uri: z.url({ protocol: /^https?$/ }).default('https://oauth2.googleapis.com/token'),
});

export interface ServiceAccount {
  projectId: string;
  clientEmail: string;
  /** `kid` of the assertion: which of the account's keys signed it. */
  privateKeyId: string | undefined;
  privateKey: KeyObject;
  /** Where the signed assertion is exchanged for an access token (and its `aud`). */
  tokenUri: string;
}

/** Parses a service-account key file; throws with a message that names the problem, never the key. */
export function parseServiceAccount(text: string): ServiceAccount {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error('is not JSON (expected the service-account key file downloaded from the Google Cloud console)');
  }
  const parsed = ServiceAccountJson.safeParse(json);
  if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join('.') || 'file'}: ${i.message}`).join('; '));
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(parsed.data.private_key);
  } catch {
    throw new Error('private_key is not a PEM private key');
  }
  if (privateKey.asymmetricKeyType !== 'rsa') throw new Error(`private_key is ${privateKey.asymmetricKeyType}, expected RSA (RS256)`);
  return {
    projectId: parsed.data.project_id,
    clientEmail: parsed.data.client_email,
    privateKeyId: parsed.data.private_key_id,
    privateKey,
    tokenUri: parsed.data.token_uri,
  };
}
