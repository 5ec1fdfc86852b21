-- Up Migration

-- Push: the authenticator app (its device id) whose signed answer decided the sign-in: approved,
-- denied by the user, or a wrong number. An outcome's column, written with the outcome; null for
-- every other method and for rows before it. A column without a default adds without a rewrite.
ALTER TABLE signins ADD COLUMN device_id text;

-- Down Migration

ALTER TABLE signins DROP COLUMN device_id;
