import { Controller, Inject, Param, Post, Query, Req, Res } from '@nestjs/common';
import { Ctx, Payload } from '@nestjs/microservices';
import type { Request, Response } from 'express';
import { Consumers } from '@mfa/contracts';
import type { Delivery } from '@mfa/messaging';
import { JetStreamConsumer, JetStreamContext, NatsController } from '@mfa/service-kit';
import { SmsReceiptsService } from '../application/sms-receipts.service.js';
import { VoiceCallService, type WebhookAnswer, type WebhookRequest } from '../application/voice-call.service.js';
import { sendConsumer } from '../config.js';
import { VOICE_WEBHOOK_BASE } from '../tokens.js';

/**
 * A Twilio webhook as the services see it: the URL Twilio requested (the public base and the path
 * with its query, as it signed it), the signature, the form parameters (strings only).
 */
function webhookRequestOf(base: string | undefined, challengeId: string, req: Request): WebhookRequest {
  const params: Record<string, string> = {};
  const body = typeof req.body === 'object' && req.body !== null ? (req.body as Record<string, unknown>) : {};
  for (const [key, value] of Object.entries(body)) if (typeof value === 'string') params[key] = value;
  const signature = req.header('x-twilio-signature');
  return { challengeId: challengeId.slice(0, 128), url: `${(base ?? '').replace(/\/+$/, '')}${req.originalUrl}`, signature: signature ?? undefined, params };
}

/** Twilio's delivery receipts of SMS (`StatusCallback` of each message), signed like the voice webhooks. */
@Controller('sms')
export class SmsWebhooksController {
  constructor(
    @Inject(SmsReceiptsService) private readonly receipts: SmsReceiptsService,
    @Inject(VOICE_WEBHOOK_BASE) private readonly base: string | undefined,
  ) {}

  @Post('status/:challengeId')
  async status(@Param('challengeId') challengeId: string, @Req() req: Request, @Res() res: Response): Promise<void> {
    const { status } = await this.receipts.receipt(webhookRequestOf(this.base, challengeId, req));
    res.status(status).end();
  }
}

/** Calls are placed one at a time per message, many at once. */
const CALL_CONCURRENCY = 32;

/** The voice requests (ChallengeStarted on mfa.evt.challenge.started.voice): each places one call. */
@NatsController()
export class VoiceRequestsController {
  constructor(@Inject(VoiceCallService) private readonly voice: VoiceCallService) {}

  // A stopping service ends a wait between attempts; the request goes back to JetStream.
  @JetStreamConsumer(Consumers.dispatchVoice, sendConsumer(CALL_CONCURRENCY))
  async place(@Payload() deliveries: Delivery[], @Ctx() ctx: JetStreamContext): Promise<void> {
    for (const delivery of deliveries) await this.voice.place(delivery, ctx.signal);
  }
}

/**
 * Twilio's webhooks of voice challenges, on this service's HTTP port (published to Twilio as
 * VOICE_WEBHOOK_BASE_URL, e.g. behind a reverse proxy that forwards <base>/voice/ here): the TwiML
 * of an answered call, the keys pressed at each prompt, the final status. Form-encoded POSTs,
 * each checked against X-Twilio-Signature over the public URL and the parameters.
 */
@Controller('voice')
export class VoiceWebhooksController {
  constructor(
    @Inject(VoiceCallService) private readonly voice: VoiceCallService,
    @Inject(VOICE_WEBHOOK_BASE) private readonly base: string | undefined,
  ) {}

  @Post('twiml/:challengeId')
  async twiml(@Param('challengeId') challengeId: string, @Req() req: Request, @Res() res: Response): Promise<void> {
    this.send(res, await this.voice.twiml(this.requestOf(challengeId, req)));
  }

  @Post('gather/:challengeId')
  async gather(
    @Param('challengeId') challengeId: string,
    @Query('prompt') prompt: string | undefined,
    @Query('ext') ext: string | undefined,
    @Req() req: Request,
    @Res() res: Response,
  ): Promise<void> {
    const counted = (value: string | undefined) => {
      const n = Number(value);
      return Number.isInteger(n) && n >= 1 && n <= 10 ? n : undefined;
    };
    const extensionPrompt = ext === undefined ? undefined : (counted(ext) ?? 1);
    this.send(res, await this.voice.gather({ ...this.requestOf(challengeId, req), prompt: counted(prompt) ?? 1, ...(extensionPrompt !== undefined ? { extensionPrompt } : {}) }));
  }

  @Post('status/:challengeId')
  async status(@Param('challengeId') challengeId: string, @Req() req: Request, @Res() res: Response): Promise<void> {
    this.send(res, await this.voice.status(this.requestOf(challengeId, req)));
  }

  private requestOf(challengeId: string, req: Request): WebhookRequest {
    return webhookRequestOf(this.base, challengeId, req);
  }

  private send(res: Response, answer: WebhookAnswer): void {
    if (answer.status === 204) {
      res.status(204).end();
      return;
    }
    res.status(answer.status).type('text/xml').send(answer.twiml);
  }
}
