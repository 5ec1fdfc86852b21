-- Up Migration

-- Generation of the user's data key that sealed the row's personal data (ChallengeStarted and
-- ChallengeRegistrationRequired v2); NULL for rows from v1 events, which carried it in clear, and
-- for rows that have seen only outcome events.
ALTER TABLE signins ADD COLUMN user_gen integer;

-- Users erased by users.delete (UserErased), known only by pseudonym: `erased:` and the first 16
-- characters of the user's keyed hash tag. Rows of such a user up to generation `gen` (sign-ins)
-- or up to `erased_at` (audit) keep the pseudonym instead of the user id, and no personal data,
-- also when their events are projected after the erasure.
CREATE TABLE erased_users (
  tenant_id  text        NOT NULL,
  pseudonym  text        NOT NULL,
  gen        integer     NOT NULL,
  erased_at  timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, pseudonym)
);

-- Down Migration

DROP TABLE erased_users;
ALTER TABLE signins DROP COLUMN user_gen;
