import {
  context,
  diag,
  INVALID_SPAN_CONTEXT,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  NodeTracerProvider,
  ParentBasedSampler,
  RandomIdGenerator,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  type Sampler,
  type SamplingResult,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { hostname } from 'node:os';

export { SpanKind, SpanStatusCode };

let provider: NodeTracerProvider | undefined;
let serviceTracer: Tracer = trace.getTracer('open-mfa');
/** False when nothing would receive spans: then withSpan starts none (see below). */
let recording = true;
const notRecorded: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

export interface TelemetryOptions {
  serviceName: string;
  serviceVersion?: string;
  /** Extra processors, e.g. an in-memory exporter in tests. */
  spanProcessors?: SpanProcessor[];
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts tracing. Call it first in main.ts, before Nest is imported, so every span of the
 * process has a provider. Spans are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set and OTEL_TRACES_EXPORTER is not "none"; sampling
 * follows OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parent-based, always on), with a
 * caller's sampled flag followed at most OTEL_REMOTE_SAMPLED_PER_SECOND times a second (see
 * samplerFromEnv). With no exporter and no extra processor, spans are not recorded; context still
 * propagates.
 */
export function startTelemetry(options: TelemetryOptions): { exporting: boolean } {
  const env = options.env ?? process.env;
  const processors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
  // An empty variable (docker-compose's `${VAR:-}`) is unset, as everywhere in the configuration.
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const exporting = Boolean(endpoint) && env.OTEL_TRACES_EXPORTER !== 'none';
  if (exporting) {
    // The exporter reads the endpoint, headers and timeout from the standard OTEL_ variables.
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter(), { scheduledDelayMillis: 1000 }));
  }
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME ?? options.serviceName,
      [ATTR_SERVICE_VERSION]: options.serviceVersion ?? '0.1.0',
      'service.instance.id': `${hostname()}:${process.pid}`,
    }),
    spanProcessors: processors,
    sampler: samplerFromEnv(env),
    // With nowhere to send spans, do not record them: trace context still propagates (ids and
    // traceparent flow through NATS headers and events), at a fraction of the per-request cost.
    ...(processors.length === 0 ? { sampler: new AlwaysOffSampler() } : {}),
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
  recording = processors.length > 0;
  serviceTracer = trace.getTracer(options.serviceName, options.serviceVersion ?? '0.1.0');
  return { exporting };
}

const SAMPLERS = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_off', 'parentbased_traceidratio', 'parentbased_always_on'];

/**
 * What is wrong with the sampling variables, for the boot to refuse (loadConfig): the SDK's own
 * habit of falling back to a default on a bad value would let a typo (`OTEL_TRACES_SAMPLER_ARG=1%`)
 * trace every request in production without a word. Blank values are unset.
 */
export function tracingConfigProblems(env: NodeJS.ProcessEnv = process.env): string[] {
  const problems: string[] = [];
  const sampler = env.OTEL_TRACES_SAMPLER?.trim().toLowerCase();
  if (sampler && !SAMPLERS.includes(sampler)) problems.push(`OTEL_TRACES_SAMPLER: must be one of ${SAMPLERS.join(', ')}`);
  const arg = env.OTEL_TRACES_SAMPLER_ARG?.trim();
  if (arg && !(/^\d+(\.\d+)?$|^\.\d+$/.test(arg) && Number(arg) <= 1)) problems.push('OTEL_TRACES_SAMPLER_ARG: must be a ratio from 0 to 1, such as 0.1');
  const perSecond = env.OTEL_REMOTE_SAMPLED_PER_SECOND?.trim();
  if (perSecond && !/^\d+(\.\d+)?$/.test(perSecond)) problems.push('OTEL_REMOTE_SAMPLED_PER_SECOND: must be a number of traces a second (0 or more)');
  return problems;
}

/** Traces a process follows a caller's sampled flag for, a second, when OTEL_REMOTE_SAMPLED_PER_SECOND is not set. */
export const REMOTE_SAMPLED_PER_SECOND = 10;

/**
 * The sampler OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG name (the values and defaults of the
 * OpenTelemetry SDK), read from `env` rather than process.env. The parent-based ones follow a
 * remote parent's sampled flag only within a budget: the NATS transport takes the caller's
 * `traceparent` as the parent before the caller is authenticated, so any client could otherwise
 * have every one of its requests traced (and exported) whatever ratio the operator chose. Over
 * OTEL_REMOTE_SAMPLED_PER_SECOND a second, such a request is sampled as a new trace would be.
 */
export function samplerFromEnv(env: NodeJS.ProcessEnv = process.env): Sampler {
  const name = (env.OTEL_TRACES_SAMPLER?.trim() || 'parentbased_always_on').toLowerCase();
  const ratio = () => new TraceIdRatioBasedSampler(ratioFromEnv(env));
  const parentBased = (root: Sampler) =>
    new ParentBasedSampler({ root, remoteParentSampled: new RemoteSampledBudget(perSecondFromEnv(env), root) });
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return ratio();
    case 'parentbased_always_off':
      return parentBased(new AlwaysOffSampler());
    case 'parentbased_traceidratio':
      return parentBased(ratio());
    case 'parentbased_always_on':
      return parentBased(new AlwaysOnSampler());
    default:
      diag.error(`OTEL_TRACES_SAMPLER value "${name}" invalid, defaulting to "parentbased_always_on".`);
      return parentBased(new AlwaysOnSampler());
  }
}

function ratioFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = env.OTEL_TRACES_SAMPLER_ARG?.trim();
  const ratio = raw ? Number(raw) : NaN;
  if (Number.isFinite(ratio) && ratio >= 0 && ratio <= 1) return ratio;
  diag.error(`OTEL_TRACES_SAMPLER_ARG=${raw ?? ''} is blank or out of [0..1], defaulting to 1.`);
  return 1;
}

function perSecondFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = env.OTEL_REMOTE_SAMPLED_PER_SECOND?.trim();
  if (!raw) return REMOTE_SAMPLED_PER_SECOND;
  const perSecond = Number(raw);
  if (Number.isFinite(perSecond) && perSecond >= 0) return perSecond;
  diag.error(`OTEL_REMOTE_SAMPLED_PER_SECOND=${raw} is not a number of traces a second, defaulting to ${REMOTE_SAMPLED_PER_SECOND}.`);
  return REMOTE_SAMPLED_PER_SECOND;
}

/**
 * Whether a span with a remote parent is where an outside caller's trace context enters: the
 * server span of a request to the public API (the NATS subjects `mfa.v1.…`, which IdPs may send).
 * The services' own hops (internal requests, event consumers) follow their parent as usual: a
 * budget there would cut the traces the entry service kept into pieces.
 */
export const entersFromOutside = (spanName: string, spanKind: SpanKind): boolean => spanKind === SpanKind.SERVER && spanName.startsWith('mfa.v1.');

/**
 * Samples a span whose remote parent is sampled. Where an outside caller's context enters
 * (`entersFromOutside`), only while a token bucket of `perSecond` tokens (its burst too) has one;
 * past that, asks `fallback` (the sampler of new traces) as if it were a new trace. The fallback is given a random trace id, not the caller's: TraceIdRatioBasedSampler
 * decides by the trace id alone, and a caller choosing its ids could pick ones it always samples.
 */
export class RemoteSampledBudget implements Sampler {
  private tokens: number;
  private last: number;
  private readonly ids = new RandomIdGenerator();

  constructor(
    private readonly perSecond: number,
    private readonly fallback: Sampler,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = perSecond;
    this.last = now();
  }

  shouldSample(ctx: Context, traceId: string, spanName: string, spanKind: SpanKind, attributes: Attributes, links: Link[]): SamplingResult {
    if (!entersFromOutside(spanName, spanKind)) return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    const now = this.now();
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    }
    return this.fallback.shouldSample(ctx, this.ids.generateTraceId(), spanName, spanKind, attributes, links);
  }

  toString(): string {
    return `RemoteSampledBudget{${this.perSecond}/s, then ${this.fallback.toString()}}`;
  }
}

export async function shutdownTelemetry(): Promise<void> {
  await provider?.shutdown().catch(() => undefined);
}

export async function flushTelemetry(): Promise<void> {
  await provider?.forceFlush().catch(() => undefined);
}

/** A carrier of W3C trace context: NATS headers, event metadata or any string map. */
export interface TraceCarrier {
  traceparent?: string | undefined;
  tracestate?: string | undefined;
}

export function contextFromCarrier(carrier: TraceCarrier | undefined, base: Context = context.active()): Context {
  if (!carrier?.traceparent) return base;
  return propagation.extract(base, carrier, {
    get: (c, key) => (key === 'traceparent' ? c.traceparent : key === 'tracestate' ? c.tracestate : undefined),
    keys: () => ['traceparent', 'tracestate'],
  });
}

export function carrierFromContext(ctx: Context = context.active()): TraceCarrier {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  const out: TraceCarrier = {};
  if (carrier.traceparent) out.traceparent = carrier.traceparent;
  if (carrier.tracestate) out.tracestate = carrier.tracestate;
  return out;
}

/**
 * Runs `fn` inside a span that is a child of `parent` (or the active context), records
 * exceptions, and ends the span however `fn` ends. When nothing records spans, no span is
 * started at all: `fn` runs in the parent's context, so an incoming trace still propagates to
 * the events and calls it makes, at no cost per request.
 */
export async function withSpan<T>(
  name: string,
  options: { kind?: SpanKind; attributes?: Attributes; parent?: Context },
  fn: (span: Span) => Promise<T> | T,
): Promise<T> {
  if (!recording) {
    const parent = options.parent;
    return parent && parent !== context.active() ? await context.with(parent, () => fn(notRecorded)) : await fn(notRecorded);
  }
  const parent = options.parent ?? context.active();
  const spanOptions: { kind?: SpanKind; attributes?: Attributes } = {};
  if (options.kind !== undefined) spanOptions.kind = options.kind;
  if (options.attributes !== undefined) spanOptions.attributes = options.attributes;
  const span = serviceTracer.startSpan(name, spanOptions, parent);
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (error) {
    span.recordException(error instanceof Error ? error : new Error(String(error)));
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.name : 'error' });
    throw error;
  } finally {
    span.end();
  }
}
