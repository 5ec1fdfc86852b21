import { VOICE_MESSAGE_TYPES, type VoiceMessageType } from '@mfa/contracts';

export { VOICE_MESSAGE_TYPES, type VoiceMessageType };

/**
 * The default scripts of the 18 message types of a voice challenge's call, in English, French and
 * Swedish (the English and French from the seeds, neutral of any vendor name; the fraud code is said
 * as the tenant set it, where the seed's recordings always say "zero"). A tenant's own recordings
 * take precedence (chooseVoiceMessage).
 */

type Language = 'en' | 'fr' | 'sv';
/** The language `<Say>` is asked to speak (Twilio's voice languages). */
const SAY_LANGUAGE: Record<Language, string> = { en: 'en-US', fr: 'fr-FR', sv: 'sv-SE' };
const DIGITS: Record<Language, readonly string[]> = {
  en: ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'],
  fr: ['zéro', 'un', 'deux', 'trois', 'quatre', 'cinq', 'six', 'sept', 'huit', 'neuf'],
  sv: ['noll', 'ett', 'två', 'tre', 'fyra', 'fem', 'sex', 'sju', 'åtta', 'nio'],
};

const THANKS = {
  en: 'Thank you for using the sign-in verification system.',
  fr: "Merci d'avoir choisi d'utiliser le système de vérification de connexion.",
  sv: 'Tack för att du använder systemet för inloggningsverifiering.',
};
const PRESS_POUND = {
  en: 'Please press the pound key to finish your verification.',
  fr: 'Appuyez sur la touche dièse pour terminer la vérification.',
  sv: 'Tryck på fyrkant för att slutföra verifieringen.',
};
const ENTER_PIN = {
  en: 'Please enter your PIN followed by the pound key to finish your verification.',
  fr: 'Veuillez entrer votre code PIN suivi de la touche dièse pour terminer votre vérification.',
  sv: 'Ange din PIN-kod följd av fyrkant för att slutföra verifieringen.',
};
const FRAUD = {
  en: (d: string) =>
    `If you did not initiate this verification, someone may be trying to access your account. Please press ${d} pound to submit a fraud alert. This will notify your company's IT team and block further verification attempts.`,
  fr: (d: string) =>
    `Si vous n'êtes pas à l'origine de cette vérification, quelqu'un tente peut-être d'accéder à votre compte. Veuillez appuyer sur ${d} puis sur dièse pour envoyer une alerte de fraude. Cela avertira l'équipe informatique de votre entreprise et bloquera les autres tentatives de vérification.`,
  sv: (d: string) =>
    `Om du inte har begärt den här verifieringen kan någon försöka komma åt ditt konto. Tryck ${d} och fyrkant för att skicka en bedrägerivarning. Det meddelar ditt företags IT-avdelning och blockerar fler verifieringsförsök.`,
};
const FRAUD_SUBMITTED = {
  en: "A fraud alert has been submitted. To unblock your account, please contact your company's IT help desk.",
  fr: 'Une alerte de fraude a été envoyée. Pour débloquer votre compte, veuillez contacter le support informatique de votre société.',
  sv: 'En bedrägerivarning har skickats. Kontakta ditt företags IT-support för att låsa upp ditt konto.',
};

const SCRIPTS: Record<VoiceMessageType, Record<Language, (fraudDigit: string) => string>> = {
  authenticationSuccessful: {
    en: () => 'Your sign-in was successfully verified. Goodbye.',
    fr: () => 'Votre connexion a bien été vérifiée. Au revoir.',
    sv: () => 'Din inloggning har verifierats. Hej då.',
  },
  extensionPrompt: {
    en: () => `${THANKS.en} Please press the pound key to continue.`,
    fr: () => `${THANKS.fr} Appuyez sur la touche dièse pour continuer.`,
    sv: () => `${THANKS.sv} Tryck på fyrkant för att fortsätta.`,
  },
  fraudConfirmation: { en: () => FRAUD_SUBMITTED.en, fr: () => FRAUD_SUBMITTED.fr, sv: () => FRAUD_SUBMITTED.sv },
  fraudGreetingStandard: {
    en: (d) => `${THANKS.en} ${PRESS_POUND.en} ${FRAUD.en(d)}`,
    fr: (d) => `${THANKS.fr} ${PRESS_POUND.fr} ${FRAUD.fr(d)}`,
    sv: (d) => `${THANKS.sv} ${PRESS_POUND.sv} ${FRAUD.sv(d)}`,
  },
  fraudReported: { en: () => FRAUD_SUBMITTED.en, fr: () => FRAUD_SUBMITTED.fr, sv: () => FRAUD_SUBMITTED.sv },
  activation: { en: () => `${THANKS.en} ${PRESS_POUND.en}`, fr: () => `${THANKS.fr} ${PRESS_POUND.fr}`, sv: () => `${THANKS.sv} ${PRESS_POUND.sv}` },
  authenticationDeniedRetry: { en: () => 'Verification denied.', fr: () => 'Vérification refusée.', sv: () => 'Verifieringen nekades.' },
  retryStandard: { en: () => `${THANKS.en} ${PRESS_POUND.en}`, fr: () => `${THANKS.fr} ${PRESS_POUND.fr}`, sv: () => `${THANKS.sv} ${PRESS_POUND.sv}` },
  greetingStandard: { en: () => `${THANKS.en} ${PRESS_POUND.en}`, fr: () => `${THANKS.fr} ${PRESS_POUND.fr}`, sv: () => `${THANKS.sv} ${PRESS_POUND.sv}` },
  greetingPin: { en: () => `${THANKS.en} ${ENTER_PIN.en}`, fr: () => `${THANKS.fr} ${ENTER_PIN.fr}`, sv: () => `${THANKS.sv} ${ENTER_PIN.sv}` },
  fraudGreetingPin: {
    en: (d) => `${THANKS.en} ${ENTER_PIN.en} ${FRAUD.en(d)}`,
    fr: (d) => `${THANKS.fr} ${ENTER_PIN.fr} ${FRAUD.fr(d)}`,
    sv: (d) => `${THANKS.sv} ${ENTER_PIN.sv} ${FRAUD.sv(d)}`,
  },
  retryPin: { en: () => `${THANKS.en} ${ENTER_PIN.en}`, fr: () => `${THANKS.fr} ${ENTER_PIN.fr}`, sv: () => `${THANKS.sv} ${ENTER_PIN.sv}` },
  extensionPromptAfterDigits: {
    en: () => 'If already at this extension, press the pound key to continue.',
    fr: () => 'Si vous utilisez déjà cette extension, appuyez sur la touche dièse pour continuer.',
    sv: () => 'Om du redan är på den här anknytningen, tryck på fyrkant för att fortsätta.',
  },
  authenticationDenied: {
    en: () => "I'm sorry, we cannot sign you in at this time. Please try again later.",
    fr: () => 'Désolé, nous ne pouvons pas vous connecter pour le moment. Veuillez réessayer plus tard.',
    sv: () => 'Tyvärr kan vi inte logga in dig just nu. Försök igen senare.',
  },
  activationGreetingStandard: { en: () => `${THANKS.en} ${PRESS_POUND.en}`, fr: () => `${THANKS.fr} ${PRESS_POUND.fr}`, sv: () => `${THANKS.sv} ${PRESS_POUND.sv}` },
  activationRetryStandard: { en: () => `${THANKS.en} ${PRESS_POUND.en}`, fr: () => `${THANKS.fr} ${PRESS_POUND.fr}`, sv: () => `${THANKS.sv} ${PRESS_POUND.sv}` },
  activationGreetingPin: { en: () => `${THANKS.en} ${ENTER_PIN.en}`, fr: () => `${THANKS.fr} ${ENTER_PIN.fr}`, sv: () => `${THANKS.sv} ${ENTER_PIN.sv}` },
  extensionPromptBeforeDigits: {
    en: () => `${THANKS.en} Please transfer this call to the extension.`,
    fr: () => `${THANKS.fr} Veuillez transférer cet appel vers l'extension.`,
    sv: () => `${THANKS.sv} Koppla det här samtalet till anknytningen.`,
  },
};

/** The user's language (BCP 47) as one of ours: its primary subtag, else English. */
export function voiceLanguage(bcp47: string | undefined): Language {
  const primary = (bcp47 ?? '').toLowerCase().split('-')[0];
  return primary === 'fr' || primary === 'sv' ? primary : 'en';
}

/** The primary language subtag of the user's language (`fr` of `fr-CA`), lower case; English when none is known. */
export function primaryLanguage(bcp47: string | undefined): string {
  const primary = (bcp47 ?? '').toLowerCase().split('-')[0] ?? '';
  return /^[a-z]{2,3}$/.test(primary) ? primary : 'en';
}

/** A message as the caller hears it: the tenant's recording (played) or our script (spoken). */
export type VoiceChoice = { kind: 'play'; language: string } | { kind: 'say'; text: string; language: string };

/**
 * The seeds' choice order: the tenant's recording in the user's language; else our script in the
 * user's language; else English (the tenant's English recording, else our English script).
 * `recorded(language)` says whether the tenant has a recording of this type in that language.
 */
export async function chooseVoiceMessage(
  type: VoiceMessageType,
  bcp47: string | undefined,
  fraudCode: string | null,
  recorded: (language: string) => Promise<boolean>,
): Promise<VoiceChoice> {
  const primary = primaryLanguage(bcp47);
  if (await recorded(primary)) return { kind: 'play', language: primary };
  if (primary !== 'en' && voiceLanguage(primary) === primary) return { kind: 'say', ...voiceMessage(type, primary, fraudCode) };
  if (primary !== 'en' && (await recorded('en'))) return { kind: 'play', language: 'en' };
  return { kind: 'say', ...voiceMessage(type, 'en', fraudCode) };
}

/** What to say for a message type, in the user's language (English when we have none), and the `<Say>` language. */
export function voiceMessage(type: VoiceMessageType, bcp47: string | undefined, fraudCode: string | null = '0'): { text: string; language: string } {
  const language = voiceLanguage(bcp47);
  const digit = DIGITS[language][Number(fraudCode ?? '0')] ?? DIGITS[language][0]!;
  return { text: SCRIPTS[type][language](digit), language: SAY_LANGUAGE[language] };
}
