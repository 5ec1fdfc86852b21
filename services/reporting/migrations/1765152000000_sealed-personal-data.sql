-- Up Migration

-- The personal data (display name, e-mail, phone) of a sign-in as its v2 start event sealed it
-- under the user's data key (`d1.<gen>.…`, generation in user_gen). Opened only when a report is
-- read: the projection needs no key, the table and its backups hold no personal data in clear,
-- and destroying the user's key (users.delete) leaves these values unreadable everywhere.
-- display_name, email and phone_number keep the values of rows written in clear (v1 events, and
-- v2 rows projected before this migration; rebuilding the projection from the streams seals those).
ALTER TABLE signins ADD COLUMN pii text;

-- Down Migration

ALTER TABLE signins DROP COLUMN pii;
