// The Prometheus and Grafana files of deploy/ are checked against the code: every service is
// scraped, and every metric and label a dashboard queries is one the services export.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { root, sources } from './sources.js';



/** The metrics the services define (counter/gauge/histogram of @mfa/telemetry), with their label names. */
function exportedMetrics(): Map<string, { kind: string; labels: Set<string> }> {
  const metrics = new Map<string, { kind: string; labels: Set<string> }>();
  const call = /\b(counter|gauge|histogram)(?:<[^>]*>)?\(\s*'(mfa_[a-z0-9_]+)'/g;
  for (const file of [...sources(join(root, 'libs')), ...sources(join(root, 'services'))]) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(call)) {
      // The labels are the first array literal after the name, within the call.
      const rest = text.slice(m.index + m[0].length, m.index + m[0].length + 600);
      const labels = /\[([^\]]*)\]/.exec(rest.split(/\)\s*;/)[0] ?? '')?.[1] ?? '';
      metrics.set(m[2]!, { kind: m[1]!, labels: new Set([...labels.matchAll(/'([a-z_]+)'/g)].map((l) => l[1]!)) });
    }
  }
  return metrics;
}

const dashboards = readdirSync(join(root, 'deploy', 'grafana', 'dashboards'))
  .filter((f) => f.endsWith('.json'))
  .map((f) => ({ file: f, json: JSON.parse(readFileSync(join(root, 'deploy', 'grafana', 'dashboards', f), 'utf8')) as Record<string, unknown> }));

describe('deploy/prometheus and deploy/grafana', () => {
  const metrics = exportedMetrics();

  it('finds the metrics the services define (the check below is not vacuous)', () => {
    for (const name of ['mfa_request_duration_seconds', 'mfa_challenge_outcomes_total', 'mfa_consumer_pending_messages', 'mfa_report_lag_seconds']) assert.ok(metrics.has(name), name);
    assert.deepEqual([...metrics.get('mfa_request_duration_seconds')!.labels].sort(), ['outcome', 'subject']);
  });

  it('scrapes every service of docker-compose on its port', () => {
    const prometheus = parse(readFileSync(join(root, 'deploy', 'prometheus', 'prometheus.yml'), 'utf8')) as { scrape_configs: Array<{ static_configs: Array<{ targets: string[] }> }> };
    const targets = new Set(prometheus.scrape_configs.flatMap((c) => c.static_configs.flatMap((s) => s.targets)));
    const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, { environment?: Record<string, string>; build?: unknown }> };
    const built = Object.entries(compose.services).filter(([, s]) => s.build !== undefined);
    assert.ok(built.length >= 6);
    for (const [name, svc] of built) {
      const port = svc.environment?.CONSOLE_PORT ?? svc.environment?.HTTP_PORT;
      assert.ok(targets.has(`${name}:${port}`), `${name}:${port} is not scraped`);
    }
  });

  it('loads alerting rules that query only metrics and labels the services export', () => {
    const prometheus = parse(readFileSync(join(root, 'deploy', 'prometheus', 'prometheus.yml'), 'utf8')) as { rule_files?: string[] };
    assert.deepEqual(prometheus.rule_files, ['alerts.yml']);
    const rules = parse(readFileSync(join(root, 'deploy', 'prometheus', 'alerts.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
    const all = rules.groups.flatMap((g) => g.rules);
    assert.ok(all.some((r) => r.alert === 'SmsPumpingSuspected'));
    for (const { alert, expr } of all) {
      const names = [...expr.matchAll(/\bmfa_[a-z0-9_]+/g)].map((m) => m[0]);
      assert.ok(names.length > 0, alert);
      for (const name of names) {
        const metric = metrics.get(name);
        assert.ok(metric, `${alert}: ${name} is not exported by any service`);
        for (const [, label] of expr.matchAll(new RegExp(`${name}\\{([a-z_]+)[=!~]`, 'g'))) assert.ok(metric.labels.has(label!), `${alert}: ${name} has no label ${label}`);
      }
    }
  });

  it('provisions Prometheus as the data source every panel uses', () => {
    const datasources = parse(readFileSync(join(root, 'deploy', 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')) as { datasources: Array<{ uid: string; url: string }> };
    const uids = new Set(datasources.datasources.map((d) => d.uid));
    assert.ok(dashboards.length >= 2);
    for (const { file, json } of dashboards) {
      for (const panel of json.panels as Array<{ title: string; datasource: { uid: string }; targets: Array<{ expr: string; datasource: { uid: string } }> }>) {
        assert.ok(uids.has(panel.datasource.uid), `${file}: ${panel.title}`);
        for (const target of panel.targets) assert.ok(uids.has(target.datasource.uid), `${file}: ${panel.title}`);
      }
    }
  });

  it('queries only metrics and labels the services export', () => {
    const always = new Set(['le', 'service', 'instance', 'job']);
    let queried = 0;
    for (const { file, json } of dashboards) {
      for (const panel of json.panels as Array<{ title: string; targets: Array<{ expr: string }> }>) {
        for (const { expr } of panel.targets) {
          const names = [...expr.matchAll(/\bmfa_[a-z0-9_]+/g)].map((m) => m[0]);
          assert.ok(names.length > 0, `${file}: ${panel.title} queries no metric of ours`);
          for (const raw of names) {
            const base = raw.replace(/_(bucket|sum|count)$/, '');
            const metric = metrics.get(raw) ?? metrics.get(base);
            assert.ok(metric, `${file}: ${panel.title}: ${raw} is not exported by any service`);
            if (raw !== base) assert.equal(metric.kind, 'histogram', `${file}: ${raw} of a ${metric.kind}`);
            queried++;
            const labels = [...expr.matchAll(/\bby \(([^)]*)\)/g), ...expr.matchAll(/\{([^}]*)\}/g)]
              .flatMap((m) => m[1]!.split(','))
              .map((l) => l.trim().split(/[!=~]/)[0]!.trim())
              .filter(Boolean);
            for (const label of labels) assert.ok(always.has(label) || metric.labels.has(label), `${file}: ${panel.title}: ${raw} has no label ${label}`);
          }
        }
      }
    }
    assert.ok(queried >= 15);
  });
});
