import { Controller, Get, Header, Inject, Optional, Res } from '@nestjs/common';
import type { Response } from 'express';
import { registry } from '@mfa/telemetry';
import { HEALTH_CHECKS } from './tokens.js';

/** A dependency the service needs to be ready: resolves when reachable, throws otherwise. */
export interface HealthCheck {
  readonly name: string;
  /** Shown in /health, never making the service unready (a degraded but working dependency). */
  readonly informational?: boolean;
  check(): Promise<void>;
}

async function within(ms: number, p: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      p,
      new Promise<void>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

@Controller()
export class OpsController {
  private stopping = false;

  constructor(@Optional() @Inject(HEALTH_CHECKS) private readonly checks: HealthCheck[] = []) {}

  /**
   * From the start of a shutdown (runService's stop()): readiness answers 503 while what the
   * service took finishes (the NATS drain, the RADIUS answers under way); liveness and metrics
   * answer until HTTP closes.
   */
  markStopping(): void {
    this.stopping = true;
  }

  /** Readiness: every dependency the service uses answers. 200 when ready, 503 otherwise. */
  @Get('health')
  async health(@Res() res: Response): Promise<void> {
    if (this.stopping) {
      res.status(503).json({ status: 'stopping', checks: {} });
      return;
    }
    const results: Record<string, string> = {};
    await Promise.all(
      (this.checks ?? []).map(async (c) => {
        try {
          await within(2_000, c.check());
          results[c.name] = 'ok';
        } catch (error) {
          results[c.name] = `down: ${(error as Error).message}`.slice(0, 200);
        }
      }),
    );
    const required = new Set((this.checks ?? []).filter((c) => !c.informational).map((c) => c.name));
    const ready = Object.entries(results).every(([name, r]) => r === 'ok' || !required.has(name));
    res.status(ready ? 200 : 503).json({ status: ready ? 'ok' : 'unavailable', checks: results });
  }

  /** Liveness: the process answers. */
  @Get('health/live')
  live(): { status: string } {
    return { status: 'ok' };
  }

  @Get('metrics')
  @Header('Content-Type', registry.contentType)
  async metrics(): Promise<string> {
    return registry.metrics();
  }
}
