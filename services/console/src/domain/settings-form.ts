import { isDeepStrictEqual } from 'node:util';
import type { TenantSettings, TenantSettingsPatch } from '@mfa/contracts';

/**
 * The tenant settings page: every setting of the contract, how it is edited, and what it does
 * (after the seeds: Azure MFA's settings pages). Of the patch built from the form, only the
 * settings that differ from the tenant's go to tenants.configure, which validates them; its errors
 * are shown as they come.
 */
export type FieldKind = 'int' | 'bool' | 'lines' | 'nullableLines' | 'text' | 'json';

export interface SettingField {
  /** Dotted path in the settings, e.g. `lockout.threshold`; also the form field's name. */
  path: string;
  label: string;
  kind: FieldKind;
  help: string;
}

export const SETTING_FIELDS: readonly SettingField[] = [
  { path: 'codeLifetimeSeconds', label: 'Code lifetime (s)', kind: 'int', help: 'How long a challenge and its code stay valid: 30–600 s. 180 s is the cloud default, 300 s the MFA Server one.' },
  { path: 'maxAttempts', label: 'Attempts per challenge', kind: 'int', help: 'Wrong codes accepted for one challenge before it is denied (1–10).' },
  { path: 'enabledMethods', label: 'Enabled methods', kind: 'lines', help: 'One per line: sms, voice, push, totp. A user whose only methods are disabled must register again.' },
  { path: 'securityDefaults', label: 'Security defaults', kind: 'bool', help: 'When on, only the authenticator app (push and codes) may be used, whatever else is enabled.' },
  { path: 'lockout.threshold', label: 'Lockout: denials', kind: 'int', help: 'Denials (wrong codes, later denied pushes and calls) across a user’s challenges that lock the account (1–100).' },
  { path: 'lockout.counterResetMinutes', label: 'Lockout: counter reset (min)', kind: 'int', help: 'Minutes after the first denial until the count starts over.' },
  { path: 'lockout.autoUnblockMinutes', label: 'Lockout: duration (min)', kind: 'int', help: 'Minutes a locked account stays locked; an administrator can unblock earlier.' },
  { path: 'ipLockout.enabled', label: 'Per-IP lockout', kind: 'bool', help: 'Count denials per client address across all users (password spraying, MFA bombing).' },
  { path: 'ipLockout.threshold', label: 'Per-IP lockout: denials', kind: 'int', help: 'Denials from one address within the window that lock it (5–10,000).' },
  { path: 'ipLockout.windowMinutes', label: 'Per-IP lockout: window (min)', kind: 'int', help: 'The sliding window the denials are counted in.' },
  { path: 'ipLockout.durationMinutes', label: 'Per-IP lockout: duration (min)', kind: 'int', help: 'How long a locked address stays locked.' },
  { path: 'ipLockout.neverBlock', label: 'Per-IP lockout: never block', kind: 'lines', help: 'One CIDR per line (IPv4 or IPv6): your offices, VPN concentrators. Never locked.' },
  { path: 'ipLockout.dryRun', label: 'Per-IP lockout: dry run', kind: 'bool', help: 'Record what would be locked (blocked-user history, metrics) and lock nothing.' },
  { path: 'fraudAlert.enabled', label: 'Fraud alerts', kind: 'bool', help: 'Let users report a sign-in they did not start (app, phone, IdP).' },
  { path: 'fraudAlert.autoBlock', label: 'Block on fraud report', kind: 'bool', help: 'A report blocks the user for 90 days, or until unblocked.' },
  { path: 'fraudAlert.code', label: 'Fraud code', kind: 'text', help: 'The digit a user presses during a phone call to report fraud (one digit; 0 by default).' },
  { path: 'notificationEmails', label: 'Notification e-mails', kind: 'lines', help: 'One address per line (at most 20): each fraud alert is e-mailed to every one.' },
  { path: 'reportFields.displayName', label: 'Reports keep names', kind: 'bool', help: 'Off: sign-ins recorded from now on leave the user’s name out of events and reports.' },
  { path: 'reportFields.email', label: 'Reports keep e-mail', kind: 'bool', help: 'Off: sign-ins recorded from now on leave the user’s e-mail out of events and reports.' },
  { path: 'trustedIps.ranges', label: 'Trusted IPs', kind: 'lines', help: 'One IPv4 CIDR per line (at most 50): sign-ins from them skip MFA. Public ranges only unless on premises.' },
  { path: 'trustedIps.onPremises', label: 'Trusted IPs: on premises', kind: 'bool', help: 'Allow private ranges too (MFA Server deployments).' },
  { path: 'trustedIps.federatedBypass', label: 'Trusted IPs: federated users inside the network', kind: 'bool', help: 'Skip MFA when the IdP says a federated user is inside the corporate network.' },
  { path: 'namedLocations', label: 'Named locations', kind: 'json', help: 'JSON array of {"name", "trusted", "ranges": [CIDRs]} (at most 200).' },
  { path: 'rememberMfa.enabled', label: 'Remember MFA', kind: 'bool', help: 'Let users skip MFA on a browser they trust, for the days below.' },
  { path: 'rememberMfa.days', label: 'Remember MFA: days', kind: 'int', help: '1–365 days.' },
  { path: 'appPasswords.allowed', label: 'App passwords', kind: 'bool', help: 'Let users create passwords for apps that cannot do MFA (legacy clients). From trusted IPs a legacy client needs none until the user creates one; once a user has used one, their legacy clients always need one (until a reset).' },
  { path: 'voice.callerId', label: 'Caller ID', kind: 'text', help: 'The number phone calls come from: a US number in E.164, e.g. +18665394191.' },
  { path: 'voice.pinMode', label: 'Voice PIN mode', kind: 'bool', help: 'Users enter their PIN then # instead of just #.' },
  { path: 'sms.allowedCountries', label: 'SMS: allowed countries', kind: 'nullableLines', help: 'ISO codes, one per line (e.g. SE); empty allows every country.' },
  { path: 'sms.blockedCountries', label: 'SMS: blocked countries', kind: 'lines', help: 'ISO codes, one per line, never sent to.' },
];

function valueAt(settings: TenantSettings, path: string): unknown {
  return path.split('.').reduce<unknown>((v, key) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined), settings);
}

/** The form's current values, as the inputs show them. */
export function formValues(settings: TenantSettings): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (const field of SETTING_FIELDS) {
    const value = valueAt(settings, field.path);
    if (field.kind === 'bool') out[field.path] = value === true;
    else if (field.kind === 'lines' || field.kind === 'nullableLines') out[field.path] = Array.isArray(value) ? value.join('\n') : '';
    else if (field.kind === 'json') out[field.path] = JSON.stringify(value ?? [], null, 2);
    else out[field.path] = value === undefined || value === null ? '' : String(value);
  }
  return out;
}

export class FormError extends Error {
  override name = 'FormError';
}

const lines = (text: string) =>
  text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);

/**
 * The patch the submitted form asks for. Values are converted, not validated (tenants.configure
 * validates and names what it refuses); an unchecked box is false; an unreadable number or JSON
 * is a FormError naming the field.
 */
export function patchFromForm(form: Record<string, unknown>): TenantSettingsPatch {
  const patch: Record<string, unknown> = {};
  for (const field of SETTING_FIELDS) {
    const raw = form[field.path];
    const text = typeof raw === 'string' ? raw : '';
    let value: unknown;
    switch (field.kind) {
      case 'bool':
        value = raw === 'on' || raw === 'true';
        break;
      case 'int':
        if (!/^\s*-?\d+\s*$/.test(text)) throw new FormError(`${field.label}: must be a whole number`);
        value = Number(text);
        break;
      case 'lines':
        value = lines(text);
        break;
      case 'nullableLines':
        value = lines(text).length > 0 ? lines(text) : null;
        break;
      case 'json':
        try {
          value = JSON.parse(text || '[]');
        } catch {
          throw new FormError(`${field.label}: not valid JSON`);
        }
        break;
      case 'text':
        value = text.trim();
        break;
    }
    const [section, key] = field.path.split('.');
    if (key === undefined) patch[section!] = value;
    else patch[section!] = { ...((patch[section!] as object | undefined) ?? {}), [key]: value };
  }
  return patch as TenantSettingsPatch;
}

/**
 * The form's values as the page showed them, carried in the form itself (the hidden `_shown`), so
 * that a save compares what the operator submits with what they were shown.
 */
export function shownToken(values: Record<string, string | boolean>): string {
  return Buffer.from(JSON.stringify(values), 'utf8').toString('base64url');
}

/** The settings a `_shown` token holds, as the form would submit them; undefined for anything unreadable. */
export function shownSettings(token: unknown): TenantSettingsPatch | undefined {
  if (typeof token !== 'string' || token.length === 0 || token.length > 256 * 1024) return undefined;
  try {
    const values = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (!values || typeof values !== 'object' || Array.isArray(values)) return undefined;
    const shown = values as Record<string, unknown>;
    const form = Object.fromEntries(
      SETTING_FIELDS.map((f) => {
        const value = shown[f.path];
        return [f.path, f.kind === 'bool' ? (value === true ? 'on' : '') : typeof value === 'string' ? value : ''];
      }),
    );
    return patchFromForm(form);
  } catch {
    return undefined;
  }
}

/**
 * The part of `patch` that differs from `base`: each setting (a section's field, an array as a
 * whole) whose value is not the same. With `base` the settings the form was shown with, only what
 * the operator changed is sent: a value the tenant stored under an older, looser rule (a `UK`
 * country code, a Canadian caller ID) stops nothing but its own change, and a setting changed
 * meanwhile in another console or the CLI keeps its new value unless this form changed it too.
 */
export function changedSettings(patch: TenantSettingsPatch, base: TenantSettings | TenantSettingsPatch): TenantSettingsPatch {
  const changed: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    const now = (base as Record<string, unknown>)[name];
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const fields = Object.entries(value as Record<string, unknown>).filter(([key, v]) => !isDeepStrictEqual(v, (now as Record<string, unknown> | undefined)?.[key]));
      if (fields.length > 0) changed[name] = Object.fromEntries(fields);
    } else if (!isDeepStrictEqual(value, now)) {
      changed[name] = value;
    }
  }
  return changed as TenantSettingsPatch;
}
