import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { defaultTenantSettings, EventSubjects, parseEvent, Streams, type AnyEvent, type EventOf } from '@mfa/contracts';
import { connectNats, createEvent, ensureStream, EventPublisher, readOnce, type NatsClients } from '@mfa/messaging';
import { createLogger, type Logger } from '@mfa/telemetry';
import { itWith, SmtpSink, tenantCreated, testEnv, testTenant, uniqueTenant } from '@mfa/testing';
import { MailLedger, type MailOutcome } from './adapters/mail-ledger.js';
import { SmtpMailer, type Mailer } from './adapters/mailer.js';
import { UserDirectory } from './adapters/user-directory.js';
import { MailRetry, NotifierService } from './application/notifier.service.js';
import { mailerFor } from './app.module.js';

/** Fraud alerts' e-mails over real SMTP (smtp-server on a local port), outcomes recorded on the real NATS, the ledger in the real Redis. */
describe('fraud: alert e-mails over real SMTP', () => {
  const smtp = new SmtpSink();
  const tenantId = uniqueTenant('mail');
  const addresses = ['soc@contoso.example', 'Helpdesk@contoso.example'];
  let nats: NatsClients;
  let redis: Redis;
  let publisher: EventPublisher;
  let mailer: SmtpMailer;
  let notifier: NotifierService;
  let alerts = 0;

  before(async () => {
    await smtp.start();
    nats = await connectNats({ url: testEnv.natsUrl, name: 'fraud-mail-test' });
    for (const stream of [Streams.userSettings, Streams.fraud]) await ensureStream(nats.jsm, stream);
    redis = new Redis(testEnv.redisUrl);
    publisher = new EventPublisher(nats.js);
    mailer = new SmtpMailer(smtp.url, 'MFA alerts <alerts@mfa.example>', 1);
    notifier = new NotifierService(mailer, new MailLedger(redis), new UserDirectory(nats.jsm), publisher, 3, createLogger('fraud-test', { level: 'error' }));
    await publisher.publish(EventSubjects.tenant(tenantId), tenantCreated(testTenant({ tenantId, settings: { ...defaultTenantSettings(), notificationEmails: addresses } })));
  });

  after(async () => {
    mailer.close();
    await smtp.stop();
    await nats.nc.drain();
    await redis.quit();
  });

  const alert = (): EventOf<'FraudReported'> => {
    const alertId = `alert-${++alerts}-${tenantId}`;
    return createEvent('FraudReported', 1, {
      tenantId,
      aggregateId: 'helga@contoso.com',
      now: new Date('2026-11-30T09:15:00.000Z'),
      id: alertId,
      data: {
        userId: 'helga@contoso.com',
        alertId,
        challengeId: 'abc.def',
        source: 'idp',
        comment: 'not me\r\nBcc: attacker@evil.example',
        clientIp: '203.0.113.9',
        application: 'Contoso VPN',
        challengeDenied: true,
        blocked: true,
        blockedUntil: '2027-02-28T09:15:00.000Z',
      },
    }) as EventOf<'FraudReported'>;
  };
  const outcomes = async (alertId: string) => {
    const out: AnyEvent[] = [];
    await readOnce(nats.js, Streams.fraud.name, EventSubjects.fraudMail(tenantId), { policy: 'all' }, (msg) => {
      const event = parseEvent(msg.json());
      if ('alertId' in event.data && event.data.alertId === alertId) out.push(event);
    });
    return out;
  };

  itWith({ real: ['nats', 'redis'], fake: ['smtp-server'] }, 'sends one message per address naming user, time, client IP, application and source; a redelivery sends nothing twice', async () => {
    smtp.mode = { kind: 'accept' };
    const event = alert();
    const before = smtp.messages.length;
    await notifier.notify(event, 1);
    const mails = smtp.messages.slice(before);
    assert.deepEqual(mails.map((m) => m.to.join(',')).sort(), ['Helpdesk@contoso.example', 'soc@contoso.example']);
    for (const mail of mails) {
      assert.equal(mail.from, 'alerts@mfa.example');
      assert.match(mail.subject, /helga@contoso\.com/);
      for (const expected of ['helga@contoso.com', '2026-11-30T09:15:00.000Z', '203.0.113.9', 'Contoso VPN', 'the identity provider', 'the pending sign-in was denied', 'blocked until 2027-02-28T09:15:00.000Z']) {
        assert.ok(mail.text.includes(expected), `${expected} in\n${mail.text}`);
      }
      // A requester's line breaks never make a header or a line of their own.
      assert.ok(mail.text.includes('not me\\u000d\\u000aBcc: attacker@evil.example'));
      assert.equal(mail.to.length, 1);
    }
    await notifier.notify(event, 2);
    assert.equal(smtp.messages.length, before + 2, 'nothing sent twice');
    const recorded = await outcomes(event.data.alertId);
    assert.deepEqual(recorded.map((e) => e.type), ['FraudNotificationSent', 'FraudNotificationSent'], 'each outcome once (same ids on redelivery)');
  });

  itWith({ real: ['nats', 'redis'], fake: ['smtp-server'] }, 'an e-mail sent whose outcome Redis fails to record is not sent again: the alert completes with its outcome events', async () => {
    smtp.mode = { kind: 'accept' };
    const event = alert();
    const before = smtp.messages.length;
    const ledger = new MailLedger(redis);
    let failures = 3;
    const flaky = Object.assign(Object.create(ledger) as MailLedger, {
      record: async (alertId: string, outcome: MailOutcome) => {
        if (failures-- > 0) throw new Error('Redis connection lost');
        return ledger.record(alertId, outcome);
      },
    });
    const notifying = new NotifierService(mailer, flaky, new UserDirectory(nats.jsm), publisher, 3, createLogger('fraud-test', { level: 'error' }));
    await notifying.notify(event, 1);
    assert.equal(smtp.messages.length, before + 2);
    assert.deepEqual((await outcomes(event.data.alertId)).map((e) => e.type), ['FraudNotificationSent', 'FraudNotificationSent']);
    // Delivered again all the same (its ack lost): the outcome the ledger would not take is held
    // apart, so the delivery mails nobody and completes (nothing to redeliver for), copying it into the ledger.
    await notifying.notify(event, 2);
    assert.equal(smtp.messages.length, before + 2);
    const held = await redis.keys(`mfa:{alert:${event.data.alertId}}:outcome:*`);
    assert.equal(held.length, 1, 'the outcome the ledger would not take, held apart');
    assert.ok((await redis.pttl(held[0]!)) > 86_400_000, 'for as long as the ledger would keep it');
    // Every claim and held outcome of the alert lapses: the ledger, where delivery 2 copied it, still says the address was mailed.
    for (const key of await redis.keys(`mfa:{alert:${event.data.alertId}}:*:*`)) await redis.pexpire(key, 1);
    await sleep(5);
    await notifying.notify(event, 3);
    assert.equal(smtp.messages.length, before + 2);
    assert.equal((await new MailLedger(redis).outcomes(event.data.alertId)).size, 2);
    assert.deepEqual((await outcomes(event.data.alertId)).map((e) => e.type), ['FraudNotificationSent', 'FraudNotificationSent']);
  });

  itWith({ real: ['nats', 'redis'], fake: ['smtp-server'] }, 'an e-mail sent while Redis takes its outcome nowhere (neither in the ledger nor held apart) is not sent again by this instance once the claim lapses', async () => {
    smtp.mode = { kind: 'accept' };
    const event = alert();
    const before = smtp.messages.length;
    const ledger = new MailLedger(redis);
    // Redis lost once the addresses are claimed: every write after that is refused.
    let down = true;
    const writes = new Set(['record', 'hold', 'renew', 'release']);
    const flaky = new Proxy(ledger, {
      get: (target, name) => {
        const value: unknown = Reflect.get(target, name);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => (down && writes.has(String(name)) ? Promise.reject(new Error('Redis connection lost')) : (value as (...a: unknown[]) => unknown).apply(target, args));
      },
    });
    const notifying = new NotifierService(mailer, flaky, new UserDirectory(nats.jsm), publisher, 3, createLogger('fraud-test', { level: 'error' }));
    await notifying.notify(event, 1);
    assert.equal(smtp.messages.length, before + 2);
    assert.deepEqual((await outcomes(event.data.alertId)).map((e) => e.type), ['FraudNotificationSent', 'FraudNotificationSent']);
    // Redis is back; the claims (left to lapse) are gone; the alert is delivered again.
    down = false;
    await redis.del(...addresses.map((to) => `mfa:{alert:${event.data.alertId}}:claim:${to.toLowerCase()}`));
    await notifying.notify(event, 2);
    assert.equal(smtp.messages.length, before + 2, 'nothing mailed twice');
    assert.equal((await ledger.outcomes(event.data.alertId)).size, 2, 'the outcomes recorded now');
  });

  itWith({ real: ['nats', 'redis'], fake: ['smtp-server'] }, 'a server that refuses is tried again with each delivery, then the failure is recorded', async () => {
    smtp.mode = { kind: 'refuse' };
    const event = alert();
    await assert.rejects(notifier.notify(event, 1), MailRetry);
    await assert.rejects(notifier.notify(event, 2), MailRetry);
    await notifier.notify(event, 3);
    const recorded = (await outcomes(event.data.alertId)) as Array<EventOf<'FraudNotificationFailed'>>;
    assert.deepEqual(recorded.map((e) => [e.type, e.data.attempts]), [['FraudNotificationFailed', 3], ['FraudNotificationFailed', 3]]);
    assert.match(recorded[0]!.data.error, /550/);
  });

  itWith({ real: ['nats', 'redis'], fake: ['smtp-server'] }, 'a server that hangs fails the try within the timeout; a temporary failure is retried; both end sent', async () => {
    smtp.mode = { kind: 'hang' };
    const event = alert();
    const started = Date.now();
    await assert.rejects(notifier.notify(event, 1), MailRetry);
    assert.ok(Date.now() - started < 10_000, `gave up on the hung server after ${Date.now() - started} ms`);
    smtp.mode = { kind: 'tempfail', n: 1 };
    const before = smtp.messages.length;
    await assert.rejects(notifier.notify(event, 2), MailRetry);
    assert.equal(smtp.messages.length, before + 1, 'the address not refused was sent to');
    await notifier.notify(event, 3);
    assert.equal(smtp.messages.length, before + 2);
    const recorded = (await outcomes(event.data.alertId)) as Array<EventOf<'FraudNotificationSent'>>;
    assert.deepEqual(recorded.map((e) => e.type), ['FraudNotificationSent', 'FraudNotificationSent']);
    assert.deepEqual(recorded.map((e) => e.data.attempts).sort(), [2, 3]);
  });

  /** A logger keeping its lines, and what of the alert must never be in them: recipients, user, client IP, application, comment. */
  const recording = () => {
    const lines: Array<{ message: string; fields: Record<string, unknown> }> = [];
    const at = (message: string, fields: Record<string, unknown> = {}) => void lines.push({ message, fields });
    const logger: Logger = { debug: at, info: at, warn: at, error: at, child: () => logger };
    return { logger, lines };
  };
  const personal = ['contoso', 'helga', '203.0.113.9', 'not me', 'attacker', 'Contoso VPN'];
  const noSmtp = (NODE_ENV: 'production' | 'development', log: Logger) =>
    mailerFor({ NODE_ENV, SMTP_URL: undefined, SMTP_FROM: 'MFA alerts <alerts@mfa.example>', SMTP_TIMEOUT_SECONDS: 1 }, log);

  itWith({ real: ['nats', 'redis'] }, 'in production without SMTP_URL, an alert whose tenant has notificationEmails (added after it was accepted) has each e-mail recorded as failed at once, and nothing of it logged', async () => {
    const { logger, lines } = recording();
    const mailer = noSmtp('production', logger);
    assert.equal(mailer.kind, 'none');
    const unconfigured = new NotifierService(mailer, new MailLedger(redis), new UserDirectory(nats.jsm), publisher, 3, logger);
    const event = alert();
    // Not retried: no try can succeed until SMTP_URL is set.
    await unconfigured.notify(event, 1);
    const recorded = (await outcomes(event.data.alertId)) as Array<EventOf<'FraudNotificationFailed'>>;
    assert.deepEqual(recorded.map((e) => [e.type, e.data.attempts]), [['FraudNotificationFailed', 1], ['FraudNotificationFailed', 1]]);
    assert.match(recorded[0]!.data.error, /no SMTP server is configured \(SMTP_URL\)/);
    assert.ok(lines.length > 0, 'the failure is logged');
    const logged = JSON.stringify(lines);
    for (const value of personal) assert.ok(!logged.includes(value), `${value} in ${logged}`);
  });

  itWith({ real: ['nats', 'redis'] }, 'in development without SMTP_URL, each e-mail is recorded as sent (logged), and its log line names the alert, not the message', async () => {
    const { logger, lines } = recording();
    const mailer = noSmtp('development', logger);
    assert.equal(mailer.kind, 'log');
    try {
      const logging = new NotifierService(mailer, new MailLedger(redis), new UserDirectory(nats.jsm), publisher, 3, logger);
      const event = alert();
      await logging.notify(event, 1);
      const recorded = (await outcomes(event.data.alertId)) as Array<EventOf<'FraudNotificationSent'>>;
      assert.deepEqual(recorded.map((e) => [e.type, e.data.logged]), [['FraudNotificationSent', true], ['FraudNotificationSent', true]]);
      const mails = lines.filter((l) => /e-mail not sent \(no SMTP_URL\)/.test(l.message));
      assert.deepEqual(mails.map((l) => [l.fields.alertId, l.fields.recipients]), [[event.data.alertId, 1], [event.data.alertId, 1]]);
      const logged = JSON.stringify(lines);
      for (const value of personal) assert.ok(!logged.includes(value), `${value} in ${logged}`);
    } finally {
      mailer.close();
    }
  });

  itWith({ real: ['nats', 'redis'], fake: ['smtp-server'] }, 'two deliveries of one alert at once (redelivered while a slow relay held the first) mail each address once', async () => {
    smtp.mode = { kind: 'accept' };
    // A relay that takes its time over every message.
    const slowRelay: Mailer = {
      kind: 'smtp',
      close: () => undefined,
      send: async (mail) => {
        await sleep(400);
        return mailer.send(mail);
      },
    };
    const slow = new NotifierService(slowRelay, new MailLedger(redis), new UserDirectory(nats.jsm), publisher, 3, createLogger('fraud-test', { level: 'error' }));
    const event = alert();
    const before = smtp.messages.length;
    let working = 0;
    const first = slow.notify(event, 1, () => working++);
    await sleep(150);
    const second = slow.notify(event, 2, () => working++);
    for (const result of await Promise.allSettled([first, second])) {
      // Each leaves to the other the address the other is mailing, and is retried until its outcome is recorded.
      if (result.status === 'rejected') assert.ok(result.reason instanceof MailRetry, String(result.reason));
    }
    assert.deepEqual(smtp.messages.slice(before).map((m) => m.to.join(',')).sort(), ['Helpdesk@contoso.example', 'soc@contoso.example']);
    assert.equal(working, 2, 'the delivery said to be in progress before each send');
    await slow.notify(event, 3);
    assert.equal(smtp.messages.length, before + 2, 'nothing sent twice');
    const recorded = await outcomes(event.data.alertId);
    assert.deepEqual(recorded.map((e) => e.type), ['FraudNotificationSent', 'FraudNotificationSent']);
  });
});
