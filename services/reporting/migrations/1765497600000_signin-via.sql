-- Up Migration

-- How a sign-in came: 'radius' (the RADIUS front; server_name and server_ip are then the RADIUS
-- client and its NAS) or 'nats' (an IdP on the NATS API). Start events without `via` came over
-- NATS, and so do every row before this column. A constant default adds the column without
-- rewriting the table.
ALTER TABLE signins ADD COLUMN via text NOT NULL DEFAULT 'nats';

-- Down Migration

ALTER TABLE signins DROP COLUMN via;
