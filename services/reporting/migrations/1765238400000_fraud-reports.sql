-- Up Migration

-- Fraud alerts (FraudReported of MFA_FRAUD), one row per alert id: re-delivery and replays insert
-- nothing twice. Personal data (name, e-mail, phone) is not copied here: a query takes it from the
-- reported sign-in's row, sealed as it is there.
CREATE TABLE fraud_alerts (
  alert_id         text        PRIMARY KEY,
  tenant_id        text        NOT NULL,
  occurred_at      timestamptz NOT NULL,
  user_id          text        NOT NULL,
  source           text        NOT NULL CHECK (source IN ('app', 'phone', 'idp')),
  challenge_id     text,
  client_ip        text,
  application      text,
  comment          text,
  challenge_denied boolean     NOT NULL,
  blocked          boolean     NOT NULL,
  blocked_until    timestamptz,
  reported_by      text,
  event_seq        bigint      NOT NULL
);
CREATE INDEX fraud_alerts_by_time ON fraud_alerts (tenant_id, occurred_at DESC, alert_id DESC);
CREATE INDEX fraud_alerts_by_user ON fraud_alerts (tenant_id, user_id, occurred_at DESC);

-- The alerts' e-mails (FraudNotificationSent / FraudNotificationFailed), one row per outcome event.
CREATE TABLE fraud_notifications (
  event_id    uuid        PRIMARY KEY,
  tenant_id   text        NOT NULL,
  alert_id    text        NOT NULL,
  recipient   text        NOT NULL,
  sent        boolean     NOT NULL,
  detail      text        NOT NULL,
  attempts    integer     NOT NULL,
  occurred_at timestamptz NOT NULL
);
CREATE INDEX fraud_notifications_by_alert ON fraud_notifications (alert_id);

-- Blocks and unblocks of users, and locks and unlocks of client addresses (MFA_FRAUD), one row per event.
CREATE TABLE block_history (
  event_id    uuid        PRIMARY KEY,
  tenant_id   text        NOT NULL,
  occurred_at timestamptz NOT NULL,
  action      text        NOT NULL CHECK (action IN ('block', 'unblock', 'auto_unblock', 'ip_lock', 'ip_unlock')),
  user_id     text,
  ip          text,
  reason      text,
  source      text,
  actor       jsonb,
  until       timestamptz,
  dry_run     boolean     NOT NULL DEFAULT false,
  event_seq   bigint      NOT NULL
);
CREATE INDEX block_history_by_time ON block_history (tenant_id, occurred_at DESC, event_id DESC);
CREATE INDEX block_history_by_user ON block_history (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX block_history_by_ip ON block_history (tenant_id, ip, occurred_at DESC) WHERE ip IS NOT NULL;

-- When each user was registered and erased (UserRegistered, UserErased), by a keyed hash of the
-- user id, one row per registration (an id erased and registered anew has two): the enabled-users
-- billing figure counts users registered at some time in a period.
CREATE TABLE user_lifetimes (
  tenant_id     text        NOT NULL,
  user_key      text        NOT NULL,
  registered_at timestamptz NOT NULL,
  erased_at     timestamptz,
  PRIMARY KEY (tenant_id, user_key, registered_at)
);
CREATE INDEX user_lifetimes_erased ON user_lifetimes (tenant_id, erased_at) WHERE erased_at IS NOT NULL;

-- Down Migration

DROP TABLE user_lifetimes;
DROP TABLE block_history;
DROP TABLE fraud_notifications;
DROP TABLE fraud_alerts;
