import { randomInt } from 'node:crypto';
import { randomDigits, randomToken } from '@mfa/crypto';
import type { CodeGenerator } from '../application/code-generator.js';

const SMS_CODE_DIGITS = 6;
const NONCE_BYTES = 16;

/** Codes and challenge nonces from the operating system's CSPRNG (uniform, unbiased). */
export class CsprngCodeGenerator implements CodeGenerator {
  smsCode(): string {
    return randomDigits(SMS_CODE_DIGITS);
  }

  numberMatch(): string {
    // 10–99: two digits with no leading zero a sign-in page could drop.
    return String(10 + randomInt(90));
  }

  challengeNonce(): string {
    return randomToken(NONCE_BYTES);
  }
}
