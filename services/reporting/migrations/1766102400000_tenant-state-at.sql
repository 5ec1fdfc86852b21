-- Up Migration

-- The time of the lifecycle event that set the tenant's state (tenants.state). A later event is
-- later by this time first, then by its sequence (state_seq): a restore of the event log from a
-- backup hands out sequences the report has already seen, and a tenant deleted again, or created
-- again, after the restore must still change the state. NULL for the rows from before: any event
-- comes after them. Nullable and without a default: added without rewriting the table.
ALTER TABLE tenants ADD COLUMN state_at timestamptz;

-- Down Migration

ALTER TABLE tenants DROP COLUMN state_at;
