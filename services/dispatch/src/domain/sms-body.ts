/**
 * The text of a code SMS. Plain ASCII (every character is one GSM-7 septet, so no UCS-2
 * fallback that would cut a segment to 70 characters) and well under 160 characters: one
 * segment. The code comes first, as the only run of digits of its length, so phones can offer
 * it for autofill and tests can find it.
 */
type Template = (code: string, minutes: number) => string;

const TEMPLATES: Record<string, Template> = {
  en: (code, n) => `${code} is your verification code. It expires in ${n} ${n === 1 ? 'minute' : 'minutes'}.`,
  fr: (code, n) => `${code} est votre code de connexion. Il expire dans ${n} ${n === 1 ? 'minute' : 'minutes'}.`,
  sv: (code, n) => `${code} - din verifieringskod. Giltig i ${n} ${n === 1 ? 'minut' : 'minuter'}.`,
  de: (code, n) => `${code} ist Ihr Anmeldecode. Er gilt ${n} ${n === 1 ? 'Minute' : 'Minuten'}.`,
  es: (code, n) => `${code} es tu clave de acceso. Expira en ${n} ${n === 1 ? 'minuto' : 'minutos'}.`,
};

export const SMS_LANGUAGES = Object.keys(TEMPLATES);

/** "fr-CA" → "fr"; anything without a template → "en". */
export function smsLanguage(tag: string | undefined): string {
  const primary = (tag ?? '').split(/[-_]/)[0]!.toLowerCase();
  return primary in TEMPLATES ? primary : 'en';
}

/** Whole minutes the code stays valid, rounded up; at least 1, at most 9999 (never six digits). */
export function expiryMinutes(occurredAt: Date, expiresAt: Date): number {
  const minutes = Math.ceil((expiresAt.getTime() - occurredAt.getTime()) / 60_000);
  return Math.min(Math.max(minutes, 1), 9999);
}

export function smsBody(input: { code: string; occurredAt: Date; expiresAt: Date; language?: string | undefined }): string {
  if (!/^\d{6}$/.test(input.code)) throw new RangeError('an SMS code is six digits');
  const template = TEMPLATES[smsLanguage(input.language)]!;
  return template(input.code, expiryMinutes(input.occurredAt, input.expiresAt));
}
