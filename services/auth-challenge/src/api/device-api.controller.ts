import { Controller, Get, HttpCode, Inject, Logger, Param, Post, Req, Res } from '@nestjs/common';
import type { RawBodyRequest } from '@nestjs/common';
import type { Request, Response } from 'express';
import { isTransientDependencyError } from '@mfa/messaging';
import { DeviceApiError, DeviceApiService, type SignedRequest } from '../application/device-api.service.js';

/** Largest device API body (docs/device-api.md). */
const MAX_BODY_BYTES = 8 * 1024;

/**
 * The device API's routes (docs/device-api.md, docs/device-api.openapi.yaml) on auth-challenge's
 * HTTP port, under /device/v1/. Errors are JSON `{error: {code, message}}` with the documented status.
 */
@Controller('device/v1')
export class DeviceApiController {
  private readonly log = new Logger('DeviceApi');

  constructor(@Inject(DeviceApiService) private readonly devices: DeviceApiService) {}

  @Post('activate')
  @HttpCode(201)
  async activate(@Req() req: RawBodyRequest<Request>, @Res() res: Response): Promise<void> {
    await this.answer(res, 201, async () => this.devices.activate(this.json(req)));
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

  private json(req: RawBodyRequest<Request>): unknown {
    const raw = this.body(req);
    try {
      return JSON.parse(raw.toString('utf8'));
    } catch {
      throw new DeviceApiError(400, 'invalid_request', 'the body is not JSON');
    }
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
    };
  }

  private async answer(res: Response, status: number, work: () => Promise<unknown>): Promise<void> {
    try {
      res.status(status).json(await work());
    } catch (error) {
      if (error instanceof DeviceApiError) {
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
