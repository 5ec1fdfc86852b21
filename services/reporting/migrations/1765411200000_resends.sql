-- Up Migration

-- challenge.resend: how many times a sign-in's SMS code was sent again (the highest resend number
-- projected, so redeliveries and replays leave it as it is).
ALTER TABLE signins ADD COLUMN resends integer NOT NULL DEFAULT 0;

-- Down Migration

ALTER TABLE signins DROP COLUMN resends;
