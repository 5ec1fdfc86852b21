/** Where the secrets of a new challenge come from; the CSPRNG in production (adapters/), fixed values in tests. */
export interface CodeGenerator {
  /** The code an SMS carries: six decimal digits. */
  smsCode(): string;
  /** The number a push's sign-in page shows and the user types in the app: two digits, 10 to 99. */
  numberMatch(): string;
  /** The random part of a challenge id (22 base64url characters, 128 bits). */
  challengeNonce(): string;
}
