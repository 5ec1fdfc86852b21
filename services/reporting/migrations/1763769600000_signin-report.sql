-- Up Migration

-- Tenants the report knows (TenantCreated), so a query can tell an unknown tenant from an empty report.
CREATE TABLE tenants (
  tenant_id  text PRIMARY KEY,
  created_at timestamptz NOT NULL
);

-- One row per challenge. Rows are merged from several events that may arrive out of order or more
-- than once: the *_seq columns (JetStream sequences of MFA_CHALLENGES) decide which event wins, so
-- re-delivery and full replays converge on the same state.
CREATE TABLE signins (
  tenant_id       text        NOT NULL,
  challenge_id    text        NOT NULL,
  occurred_at     timestamptz NOT NULL,
  user_id         text        NOT NULL,
  display_name    text,
  email           text,
  phone_number    text,
  device_token    text,
  auth_method     text,
  result          text CHECK (result IN ('success', 'failure')),
  result_detail   text,
  server_name     text,
  server_ip       text,
  client_ip       text,
  application     text,
  request_id      text,
  expires_at      timestamptz,
  completed_at    timestamptz,
  failed_attempts integer     NOT NULL DEFAULT 0,
  -- Sequence of the event that gave the sign-in context (ChallengeStarted or
  -- ChallengeRegistrationRequired); NULL while only outcome events were seen and the context
  -- columns hold what those carry.
  context_seq     bigint,
  -- Sequence of the outcome recorded: the first outcome (lowest sequence) wins.
  result_seq      bigint,
  last_event_seq  bigint      NOT NULL,
  PRIMARY KEY (tenant_id, challenge_id),
  CONSTRAINT signins_outcome_complete CHECK (
    (result IS NULL) = (result_detail IS NULL)
    AND (result IS NULL) = (completed_at IS NULL)
    AND (result IS NULL) = (result_seq IS NULL)
  )
);

CREATE INDEX signins_by_time ON signins (tenant_id, occurred_at DESC, challenge_id DESC);
CREATE INDEX signins_by_user ON signins (tenant_id, user_id, occurred_at DESC, challenge_id DESC);

-- Delivery outcomes come from another stream and may be projected before the challenge row
-- exists; kept apart and joined at query time so neither projection can lose the other's write.
CREATE TABLE deliveries (
  tenant_id    text        NOT NULL,
  challenge_id text        NOT NULL,
  status       text        NOT NULL CHECK (status IN ('sent', 'failed')),
  provider     text,
  message_id   text,
  attempts     integer     NOT NULL,
  occurred_at  timestamptz NOT NULL,
  -- Sequence in MFA_DISPATCH: the latest delivery outcome of a challenge wins.
  event_seq    bigint      NOT NULL,
  PRIMARY KEY (tenant_id, challenge_id)
);
