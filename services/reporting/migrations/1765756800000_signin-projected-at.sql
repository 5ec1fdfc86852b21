-- Up Migration

-- When the row was first written. A row that only outcome events have written so far (its start
-- is in a batch still being projected, or being retried) holds the outcome's time and none of the
-- start's context: the report leaves it out until its start is projected, or for at most a minute
-- (a start that never comes, such as a dead-lettered one, must not hide the sign-in for good).
-- Set by the default on insert only, so instances of the previous release, which do not name the
-- column, keep it right during a rolling upgrade. now() is stable, not volatile: the column is
-- added without rewriting the table (the rows already there take the migration's time).
ALTER TABLE signins ADD COLUMN projected_at timestamptz NOT NULL DEFAULT now();

-- Down Migration

ALTER TABLE signins DROP COLUMN projected_at;
