-- Up Migration

-- The pseudonym the rows of an erased user keep when it differs from the row's own: an erasure
-- projected again after a master key rotation records the user under the new key's pseudonym as
-- well (so that the user's rows are still matched once the old key has left
-- MFA_PREVIOUS_ENCRYPTION_KEYS), and that record names the pseudonym of the user's first erasure,
-- which the rows keep across rotations. NULL: the rows keep the row's own pseudonym.
-- Nullable and without a default, so the column is added without rewriting the table, and
-- instances of the previous release, which do not name it, keep working during a rolling upgrade
-- (their rows under the new key are written without one, as before).
ALTER TABLE erased_users ADD COLUMN alias text;

-- Down Migration

ALTER TABLE erased_users DROP COLUMN alias;
