import { Controller, Get, Inject, Param, Res } from '@nestjs/common';
import { MessagePattern, Payload } from '@nestjs/microservices';
import type { Response } from 'express';
import {
  Subjects,
  VoiceMessagesDeleteRequest,
  VoiceMessagesListRequest,
  VoiceMessagesUploadRequest,
  type VoiceMessagesDeleteReply,
  type VoiceMessagesListReply,
  type VoiceMessagesUploadReply,
} from '@mfa/contracts';
import { ContractPipe, NatsController } from '@mfa/service-kit';
import { VoiceRecordingsService } from '../application/voice-recordings.service.js';

/** The tenants' voice recordings through the public API (admin scope; audited like every admin call). */
@NatsController()
export class VoiceRecordingsController {
  constructor(@Inject(VoiceRecordingsService) private readonly recordings: VoiceRecordingsService) {}

  @MessagePattern(Subjects.voiceMessagesUpload)
  upload(@Payload(new ContractPipe(VoiceMessagesUploadRequest)) request: VoiceMessagesUploadRequest): Promise<VoiceMessagesUploadReply> {
    return this.recordings.upload(request);
  }

  @MessagePattern(Subjects.voiceMessagesList)
  list(@Payload(new ContractPipe(VoiceMessagesListRequest)) request: VoiceMessagesListRequest): Promise<VoiceMessagesListReply> {
    return this.recordings.list(request);
  }

  @MessagePattern(Subjects.voiceMessagesDelete)
  delete(@Payload(new ContractPipe(VoiceMessagesDeleteRequest)) request: VoiceMessagesDeleteRequest): Promise<VoiceMessagesDeleteReply> {
    return this.recordings.delete(request);
  }
}

/**
 * The recordings a call's `<Play>` names, on the webhooks' public base (VOICE_WEBHOOK_BASE_URL):
 * GET with a signed, expiring token in the path. Anything else is 404.
 */
@Controller('voice/recordings')
export class RecordingFetchController {
  constructor(@Inject(VoiceRecordingsService) private readonly recordings: VoiceRecordingsService) {}

  @Get(':tenantId/:token')
  async fetch(@Param('tenantId') tenantId: string, @Param('token') token: string, @Res() res: Response): Promise<void> {
    const found = await this.recordings.fetch(tenantId.slice(0, 64), token.slice(0, 512));
    if (found.status === 404) {
      res.status(404).type('text/plain').send('not found');
      return;
    }
    res.status(200).set({ 'Content-Type': found.contentType, 'Content-Length': String(found.size), 'Cache-Control': 'private, max-age=600', 'X-Content-Type-Options': 'nosniff' });
    found.body.on('error', () => res.destroy());
    found.body.pipe(res);
  }
}
