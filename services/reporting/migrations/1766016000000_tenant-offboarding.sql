-- Up Migration

-- Tenant offboarding (tenants.delete). TenantDeleted makes the tenant unknown to every report query
-- (not_found, as a tenant never created); TenantErased deletes its report rows but for the erased
-- users (erased_users: reapplying erasures after a restore needs them) and the audit trail
-- (audit_log, kept for good); a TenantCreated after it is a new tenant under the same id, known
-- again with an empty report.
--
-- `state` is what the tenant's last lifecycle event says, `state_seq` that event's sequence in
-- MFA_USER_SETTINGS (and `state_at` its time, 1766102400000): only a later event changes it, so
-- re-delivered and replayed events change nothing. NULL for the rows from before, which their
-- TenantCreated wrote: any event comes after it. The times are the latest creation, deletion and
-- erasure; the report rows of the tenant from before its latest erasure, or once created again from
-- before that creation, are a former tenant's and are deleted. created_at may be NULL: a deletion
-- projected before the creation it follows.
-- Constant defaults and nullable columns: added without rewriting the table; instances of the
-- previous release, which insert (tenant_id, created_at) only, write active tenants as before.
ALTER TABLE tenants ADD COLUMN state text NOT NULL DEFAULT 'active' CONSTRAINT tenants_state_check CHECK (state IN ('active', 'deleted', 'erased'));
ALTER TABLE tenants ADD COLUMN state_seq bigint;
ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;
ALTER TABLE tenants ADD COLUMN erased_at timestamptz;
ALTER TABLE tenants ALTER COLUMN created_at DROP NOT NULL;

-- Down Migration

-- The previous release knows only active tenants: a deleted or erased one would be reported again.
DELETE FROM tenants WHERE state <> 'active';
UPDATE tenants SET created_at = now() WHERE created_at IS NULL;
ALTER TABLE tenants ALTER COLUMN created_at SET NOT NULL;
ALTER TABLE tenants DROP COLUMN erased_at;
ALTER TABLE tenants DROP COLUMN deleted_at;
ALTER TABLE tenants DROP COLUMN state_seq;
ALTER TABLE tenants DROP COLUMN state;
