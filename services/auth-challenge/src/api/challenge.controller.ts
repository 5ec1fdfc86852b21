import { Ctx, MessagePattern, Payload } from '@nestjs/microservices';
import {
  ChallengeResendRequest,
  ChallengeStartRequest,
  ChallengeStatusRequest,
  ChallengeVerifyRequest,
  InternalSubjects,
  Subjects,
  VoiceOutcomeRequest,
  type VoiceOutcomeReply,
  type ChallengeResendReply,
  type ChallengeStartReply,
  type ChallengeVerifyReply,
} from '@mfa/contracts';
import { ContractPipe, NatsController, NatsRequestContext } from '@mfa/service-kit';
import { ChallengeService } from '../application/challenge.service.js';

/** challenge.start / verify / status / resend: validated by the contract's schemas, answered by ChallengeService. */
@NatsController()
export class ChallengeController {
  constructor(private readonly challenges: ChallengeService) {}

  @MessagePattern(Subjects.challengeStart)
  start(
    @Payload(new ContractPipe(ChallengeStartRequest)) request: ChallengeStartRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<ChallengeStartReply> {
    return this.challenges.start(request, ctx.receivedAt, ctx.deadline);
  }

  @MessagePattern(Subjects.challengeVerify)
  verify(
    @Payload(new ContractPipe(ChallengeVerifyRequest)) request: ChallengeVerifyRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<ChallengeVerifyReply> {
    return this.challenges.verify(request, ctx.receivedAt, ctx.deadline);
  }

  @MessagePattern(Subjects.challengeResend)
  resend(
    @Payload(new ContractPipe(ChallengeResendRequest)) request: ChallengeResendRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<ChallengeResendReply> {
    return this.challenges.resend(request, ctx.receivedAt, ctx.deadline);
  }

  /** dispatch: the answer of a voice challenge's call (internal: NATS permissions keep callers out). */
  @MessagePattern(InternalSubjects.voiceOutcome)
  voiceOutcome(@Payload(new ContractPipe(VoiceOutcomeRequest)) request: VoiceOutcomeRequest, @Ctx() ctx: NatsRequestContext): Promise<VoiceOutcomeReply> {
    return this.challenges.voiceOutcome(request, ctx.receivedAt, ctx.deadline);
  }

  @MessagePattern(Subjects.challengeStatus)
  status(
    @Payload(new ContractPipe(ChallengeStatusRequest)) request: ChallengeStatusRequest,
    @Ctx() ctx: NatsRequestContext,
  ): Promise<ChallengeVerifyReply> {
    return this.challenges.status(request, ctx.receivedAt);
  }
}
