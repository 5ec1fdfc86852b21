-- Up Migration

-- reports.audit.query by operator (the `sub` of the console operator who acted) and by subject
-- (every users.delete), without reading the tenant's whole trail for either. Both keep the
-- report's order (occurred_at DESC, event_id DESC): a page is the first rows of the index. The
-- operator's is on the expression the query compares, over the rows that name an operator (the
-- console's actions) only. The builds hold the trail's writes (its projection's inserts) until
-- they end; the trail is one row per admin action, small beside the sign-ins.
CREATE INDEX audit_log_by_operator ON audit_log (tenant_id, (operator ->> 'sub'), occurred_at DESC, event_id DESC) WHERE operator IS NOT NULL;
CREATE INDEX audit_log_by_subject ON audit_log (tenant_id, subject, occurred_at DESC, event_id DESC);

-- Down Migration

DROP INDEX audit_log_by_subject;
DROP INDEX audit_log_by_operator;
