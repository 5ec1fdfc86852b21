import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, SpanKind, trace, TraceFlags, type Context } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type Sampler } from '@opentelemetry/sdk-trace-base';
import { contextFromCarrier, RemoteSampledBudget, samplerFromEnv, shutdownTelemetry, startTelemetry, tracingConfigProblems, withSpan } from './tracing.js';

// The NATS transport takes a caller's traceparent as the parent before the caller is
// authenticated: its sampled flag must not make every request of any client traced.

/** A tracer over `sampler`, and the spans it recorded. */
function tracerWith(sampler: Sampler) {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ sampler, spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { tracer: provider.getTracer('test'), recorded: () => exporter.getFinishedSpans().length };
}

/** The server span of a public API request, where a caller's context enters. */
const API = 'mfa.v1.challenge.start';
const SERVER = { kind: SpanKind.SERVER };

/** A context whose parent is a caller's span, flagged sampled, with a fresh trace id. */
const remoteSampled = (traceId = randomBytes(16).toString('hex')): Context =>
  trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: randomBytes(8).toString('hex'), traceFlags: TraceFlags.SAMPLED, isRemote: true });

describe('sampling', () => {
  it('follows a remote sampled parent at most OTEL_REMOTE_SAMPLED_PER_SECOND times (a burst of 1000)', () => {
    const { tracer, recorded } = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0', OTEL_REMOTE_SAMPLED_PER_SECOND: '10' }));
    for (let i = 0; i < 1000; i++) tracer.startSpan(API, SERVER, remoteSampled()).end();
    // 10 of the bucket, plus what refills while the loop runs (well under a second).
    assert.ok(recorded() >= 10 && recorded() <= 20, `recorded ${recorded()}`);
  });

  it('defaults to 10 a second (with OTEL_TRACES_SAMPLER=parentbased_always_off, a caller is all that samples)', () => {
    const { tracer, recorded } = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' }));
    for (let i = 0; i < 1000; i++) tracer.startSpan(API, SERVER, remoteSampled()).end();
    assert.ok(recorded() >= 10 && recorded() <= 20, `recorded ${recorded()}`);
  });

  it('samples the caller over the budget as a new trace, not by the trace id the caller chose', () => {
    // Ids a ratio sampler of 0.1 always samples (TraceIdRatioBasedSampler reads the low 32 bits).
    const chosen = () => `${randomBytes(12).toString('hex')}00000001`;
    const { tracer, recorded } = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1', OTEL_REMOTE_SAMPLED_PER_SECOND: '0' }));
    for (let i = 0; i < 2000; i++) tracer.startSpan(API, SERVER, remoteSampled(chosen())).end();
    assert.ok(recorded() > 100 && recorded() < 320, `about 10 % of 2000, recorded ${recorded()}`);
  });

  it('follows a sampled parent without a budget in the services’ own hops: internal requests and event consumers', () => {
    const { tracer, recorded } = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0', OTEL_REMOTE_SAMPLED_PER_SECOND: '1' }));
    for (let i = 0; i < 300; i++) {
      tracer.startSpan('mfa.int.voice.outcome', SERVER, remoteSampled()).end();
      tracer.startSpan('reporting-challenges', { kind: SpanKind.CONSUMER }, remoteSampled()).end();
    }
    assert.equal(recorded(), 600);
  });

  it('refills the budget with time', () => {
    let now = 0;
    const budget = new RemoteSampledBudget(5, samplerFromEnv({ OTEL_TRACES_SAMPLER: 'always_off' }), () => now);
    const sampled = () => budget.shouldSample(remoteSampled(), randomBytes(16).toString('hex'), API, SpanKind.SERVER, {}, []).decision;
    const count = (n: number) => Array.from({ length: n }, sampled).filter((d) => d !== 0).length;
    assert.equal(count(100), 5);
    now += 400;
    assert.equal(count(100), 2);
    now += 10_000;
    assert.equal(count(100), 5, 'the burst is the per-second budget, not what accumulated');
  });

  it('names what is wrong with the sampling variables, for the boot to refuse them (no silent fallback to tracing everything)', () => {
    assert.deepEqual(tracingConfigProblems({}), []);
    assert.deepEqual(tracingConfigProblems({ OTEL_TRACES_SAMPLER: ' ', OTEL_TRACES_SAMPLER_ARG: '', OTEL_REMOTE_SAMPLED_PER_SECOND: '' }), []);
    assert.deepEqual(tracingConfigProblems({ OTEL_TRACES_SAMPLER: 'ParentBased_TraceIdRatio', OTEL_TRACES_SAMPLER_ARG: '0.05', OTEL_REMOTE_SAMPLED_PER_SECOND: '2.5' }), []);
    for (const arg of ['0', '1', '.5', '1.0']) assert.deepEqual(tracingConfigProblems({ OTEL_TRACES_SAMPLER_ARG: arg }), [], arg);
    assert.match(tracingConfigProblems({ OTEL_TRACES_SAMPLER: 'parentbased_ratio' }).join(), /OTEL_TRACES_SAMPLER: must be one of/);
    for (const arg of ['1%', '5', '-0.1', '0x1', 'NaN', '1e-2']) assert.match(tracingConfigProblems({ OTEL_TRACES_SAMPLER_ARG: arg }).join(), /OTEL_TRACES_SAMPLER_ARG: must be a ratio/, arg);
    for (const n of ['-1', 'ten', 'Infinity']) assert.match(tracingConfigProblems({ OTEL_REMOTE_SAMPLED_PER_SECOND: n }).join(), /OTEL_REMOTE_SAMPLED_PER_SECOND/, n);
  });

  it('samples local root spans at OTEL_TRACES_SAMPLER_ARG', () => {
    const { tracer, recorded } = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' }));
    for (let i = 0; i < 4000; i++) tracer.startSpan('root', {}, ROOT_CONTEXT).end();
    assert.ok(recorded() > 800 && recorded() < 1200, `about 1000 of 4000, recorded ${recorded()}`);
  });

  it('keeps children of a local sampled span, and the non-parent-based samplers as the SDK has them', () => {
    const { tracer, recorded } = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '1', OTEL_REMOTE_SAMPLED_PER_SECOND: '0' }));
    const root = tracer.startSpan('root', {}, ROOT_CONTEXT);
    for (let i = 0; i < 100; i++) tracer.startSpan('child', {}, trace.setSpan(ROOT_CONTEXT, root)).end();
    root.end();
    assert.equal(recorded(), 101);
    const on = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'always_on' }));
    const off = tracerWith(samplerFromEnv({ OTEL_TRACES_SAMPLER: 'always_off' }));
    for (let i = 0; i < 100; i++) {
      on.tracer.startSpan('s', {}, remoteSampled()).end();
      off.tracer.startSpan('s', {}, remoteSampled()).end();
    }
    assert.equal(on.recorded(), 100);
    assert.equal(off.recorded(), 0);
  });

  it('is what startTelemetry uses, read from its env: a traceparent of a NATS caller (contextFromCarrier)', async () => {
    const exporter = new InMemorySpanExporter();
    startTelemetry({ serviceName: 'sampling-test', env: { OTEL_TRACES_SAMPLER: 'parentbased_always_off', OTEL_REMOTE_SAMPLED_PER_SECOND: '3' }, spanProcessors: [new SimpleSpanProcessor(exporter)] });
    try {
      for (let i = 0; i < 200; i++) {
        const parent = contextFromCarrier({ traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01` });
        await withSpan(API, { parent, kind: SpanKind.SERVER }, () => undefined);
      }
      const recorded = exporter.getFinishedSpans().length;
      assert.ok(recorded >= 3 && recorded <= 5, `recorded ${recorded}`);
    } finally {
      await shutdownTelemetry();
    }
  });
});
