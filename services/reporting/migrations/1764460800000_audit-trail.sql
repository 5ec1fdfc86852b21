-- Up Migration

-- The admin audit trail (AdminActionRecorded events of MFA_AUDIT): one row per admin request,
-- keyed by the event id, so re-delivery and replays insert nothing twice.
CREATE TABLE audit_log (
  event_id    uuid        PRIMARY KEY,
  tenant_id   text        NOT NULL,
  occurred_at timestamptz NOT NULL,
  client_id   text        NOT NULL,
  operator    jsonb,
  subject     text        NOT NULL,
  user_id     text,
  outcome     text        NOT NULL,
  event_seq   bigint      NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (tenant_id, occurred_at DESC, event_id DESC);
CREATE INDEX audit_log_by_client ON audit_log (tenant_id, client_id, occurred_at DESC);
CREATE INDEX audit_log_by_user ON audit_log (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;

-- Down Migration

DROP TABLE audit_log;
