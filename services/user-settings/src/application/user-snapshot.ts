import { phoneNumberInfo } from '@mfa/contracts';
import { formatWrappedDataKey, open, SealContext, userTag, type Keyring } from '@mfa/crypto';
import { personalDataOf, sealPersonalData, type UserDataKey } from '@mfa/service-kit';
import { parseDeviceId, type UserSnapshot } from '@mfa/projection';
import { activeTokens, appPasswordRequired, defaultMethodOf, methodsOf, type TotpToken, type UserState } from '../domain/user.js';

/** Where a token's secret was sealed: an app's to its user, a hardware token's to the tenant's inventory. */
export function secretContext(tenantId: string, userId: string, token: Pick<TotpToken, 'tokenId' | 'hardware'>) {
  return token.hardware ? SealContext.hardwareSecret(tenantId, token.tokenId) : SealContext.totpSecret(tenantId, userId, token.tokenId);
}

/**
 * What auth-challenge gets of a user: profile, methods, the data key (still wrapped) that seals
 * their personal data in challenge events, and the active TOTP tokens with their secrets opened
 * (the projection writer masks them before they reach Redis). Pending tokens stay out: they
 * cannot be used to sign in until activated.
 */
export function userSnapshot(
  keyring: Keyring,
  tenantId: string,
  userId: string,
  state: UserState,
  seq: number,
  /** The user's current data key. */
  key: UserDataKey,
): UserSnapshot {
  // Sealed here, once per change of the user, rather than at every challenge.start: start copies it
  // into ChallengeStarted/ChallengeRegistrationRequired (v2) with no cryptography on the hot path.
  const challengePii = sealPersonalData(key, { tenantId, userId, purpose: 'challenge' }, personalDataOf(state.profile));
  const tag = userTag(keyring, tenantId, userId);
  return {
    tenantId,
    userId,
    seq,
    ...state.profile,
    dataKey: formatWrappedDataKey(key.gen, key.wrapped),
    ...(challengePii ? { challengePii } : {}),
    methods: methodsOf(state),
    defaultMethod: defaultMethodOf(state),
    appPasswordRequired: appPasswordRequired(state),
    // A challenge started under another value is void (a reset since, or an erasure and a new
    // registration); 0 for a state folded before the time was kept (still changed by a reset).
    validFrom: state.codesValidFromMs ?? 0,
    ...(state.profile.phoneNumber ? { phoneCountry: phoneNumberInfo(state.profile.phoneNumber).country } : {}),
    totpTokens: activeTokens(state).map((t) => ({
      tokenId: t.tokenId,
      secret: open(keyring, t.sealedSecret, secretContext(tenantId, userId, t)),
      digits: t.digits,
      period: t.period,
      algorithm: t.algorithm ?? 'SHA1',
      activatedStep: t.activatedStep ?? 0,
    })),
    devices: (state.devices ?? []).map((d) => {
      const id = parseDeviceId(d.deviceId);
      return {
        nonce: id?.nonce ?? d.deviceId,
        device: {
          state: d.state,
          algorithm: d.algorithm,
          publicKey: d.publicKey,
          platform: d.platform,
          name: d.name,
          ...(d.sealedPushToken ? { sealedPushToken: d.sealedPushToken } : {}),
          activatedAt: new Date(d.activatedAtMs).toISOString(),
          // Activated under an earlier master key: the app keeps its id, which carries the user's tag of then.
          ...(id && id.tag !== tag ? { id: d.deviceId } : {}),
        },
      };
    }),
  };
}
