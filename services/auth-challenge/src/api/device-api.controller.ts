import { Controller, Get, HttpCode, Inject, Logger, Param, Post, Req, Res } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { RangeSet } from '@mfa/contracts';
import { isTransientDependencyError } from '@mfa/messaging';
import { DeviceApiError, DeviceApiService, type SignedRequest } from '../application/device-api.service.js';
import type { AuthChallengeConfig } from '../config.js';
import { CONFIG } from '../tokens.js';
import { sourceAddress, trustedProxies, type ForwardedHeader } from './device-api.source.js';

/** Largest device API body (docs/device-api.md). */
const MAX_BODY_BYTES = 8 * 1024;

/**
 * The device API's routes (docs/device-api.md, docs/device-api.openapi.yaml) on auth-challenge's
 * HTTP port, under /device/v1/. Errors are JSON `{error: {code, message}}` with the documented status.
 */
@Controller('device/v1')
export class DeviceApiController {
  private readonly log = new Logger('DeviceApi');
  /** DEVICE_API_TRUSTED_PROXIES: whose X-Forwarded-For (or Forwarded) names the client. */
  private readonly proxies: RangeSet;
  /** DEVICE_API_FORWARDED_HEADER: the one header those proxies write the client in. */
  private readonly forwardedHeader: ForwardedHeader;

  constructor(
    @Inject(DeviceApiService) private readonly devices: DeviceApiService,
    @Inject(CONFIG) config: Pick<AuthChallengeConfig, 'DEVICE_API_TRUSTED_PROXIES' | 'DEVICE_API_FORWARDED_HEADER'>,
  ) {
    this.proxies = trustedProxies(config.DEVICE_API_TRUSTED_PROXIES);
    this.forwardedHeader = config.DEVICE_API_FORWARDED_HEADER;
  }

  @Post('activate')
  @HttpCode(201)
  async activate(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    // The raw body: the service reads the JSON, so that a body that is not JSON counts against its source.
    await this.answer(res, 201, async () => this.devices.activate(this.body(req), this.source(req)));
  }

  @Get('challenges/pending')
  async pending(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    await this.answer(res, 200, () => this.devices.pending(this.signed(req)));
  }

  @Post('challenges/:challengeId/answer')
  async answerChallenge(@Param('challengeId') challengeId: string, @Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    await this.answer(res, 200, () => this.devices.answer(this.signed(req), challengeId.slice(0, 128)));
  }

  private body(req: RawBodyRequest<Request>): Buffer {
    const raw = req.rawBody ?? Buffer.alloc(0);
    if (raw.length > MAX_BODY_BYTES) throw new DeviceApiError(413, 'invalid_request', `the body is larger than ${MAX_BODY_BYTES} bytes`);
    return raw;
  }

  /** The client's address: the connection's, or, from a trusted proxy, the one its forwarded header names. */
  private source(req: Request): string | undefined {
    return sourceAddress(req.socket.remoteAddress, req.headers[this.forwardedHeader], this.proxies, this.forwardedHeader);
  }

  private signed(req: RawBodyRequest<Request>): SignedRequest {
    const header = (name: string) => {
      const value = req.headers[name];
      return typeof value === 'string' ? value.slice(0, 512) : undefined;
    };
    return {
      method: req.method,
      path: req.originalUrl,
      body: this.body(req),
      headers: { 'mfa-device': header('mfa-device'), 'mfa-timestamp': header('mfa-timestamp'), 'mfa-nonce': header('mfa-nonce'), 'mfa-signature': header('mfa-signature') },
      source: this.source(req),
    };
  }

  private async answer(res: Response, status: number, work: () => Promise<unknown>): Promise<void> {
    try {
      res.status(status).json(await work());
    } catch (error) {
      if (error instanceof DeviceApiError) {
        if (error.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(error.retryAfterSeconds));
        res.status(error.status).json({ error: { code: error.code, message: error.message } });
        return;
      }
      // Not the client's fault: logged (the filter would see the answer sent and say nothing), and
      // answered as documented: `unavailable` when a dependency (Redis, NATS) failed, to try again.
      this.log.error('device API request failed', error instanceof Error ? error.stack : String(error));
      if (isTransientDependencyError(error)) {
        res.status(503).json({ error: { code: 'unavailable', message: 'the service could not answer right now; try again' } });
        return;
      }
      res.status(500).json({ error: { code: 'internal', message: 'something went wrong' } });
    }
  }
}
