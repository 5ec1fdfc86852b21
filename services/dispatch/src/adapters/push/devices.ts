import type { RedisClient } from '@mfa/projection';
import { z } from 'zod';
import { DevicePlatform } from '@mfa/contracts';
import { challengeId as deviceIdOf, projectedDeviceId, RedisKeys } from '@mfa/projection';

/** The fields of a device in user-settings' projection (RedisKeys.devices) that a push needs; the others are not read. */
const StoredDevice = z.object({
  state: z.enum(['active', 'reregister']),
  platform: DevicePlatform,
  sealedPushToken: z.string().min(1).optional(),
  /** The id of an app activated under an earlier master key (ProjectedDevice.id): its token is sealed bound to it. */
  id: z.string().optional(),
});

export interface Device {
  /**
   * `<user tag>.<nonce>`, as the device API and events name it: the tag the user had when the app
   * was activated (an earlier master key's, for an app activated before a rotation).
   */
  deviceId: string;
  /** The field of the hash: the device's part of its id. */
  nonce: string;
  state: 'active' | 'reregister';
  platform: DevicePlatform;
  /** Sealed for SealContext.pushToken(tenant, user, deviceId); absent for platform none. */
  sealedPushToken: string | undefined;
}

/**
 * The user's authenticator apps as user-settings projects them into Redis: one hash per user,
 * device nonce -> JSON. An entry that does not parse is reported, not fatal: the user's other
 * devices still get their push.
 */
export class DeviceDirectory {
  constructor(private readonly redis: Pick<RedisClient, 'hgetall'>) {}

  async of(tag: string): Promise<{ devices: Device[]; malformed: string[] }> {
    const entries = await this.redis.hgetall(RedisKeys.devices(tag));
    const devices: Device[] = [];
    const malformed: string[] = [];
    for (const [nonce, value] of Object.entries(entries)) {
      let parsed: z.infer<typeof StoredDevice>;
      try {
        parsed = StoredDevice.parse(JSON.parse(value));
      } catch {
        malformed.push(deviceIdOf(tag, nonce));
        continue;
      }
      // Its own id, naming the same nonce, or the entry is not the device it claims to be.
      const deviceId = projectedDeviceId(tag, nonce, parsed);
      if (deviceId === undefined) {
        malformed.push(deviceIdOf(tag, nonce));
        continue;
      }
      devices.push({ deviceId, nonce, state: parsed.state, platform: parsed.platform, sealedPushToken: parsed.sealedPushToken });
    }
    // A stable order: the same request walks the devices the same way every time.
    devices.sort((a, b) => (a.nonce < b.nonce ? -1 : a.nonce > b.nonce ? 1 : 0));
    return { devices, malformed };
  }
}
