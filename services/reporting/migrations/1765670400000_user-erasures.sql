-- Up Migration

-- Erasures become facts of their own beside the registrations of user_lifetimes. Before, an
-- erasure was written into the registration it followed, so one that reached Postgres before its
-- registration (two reporting instances, a retry after a back-off, a replay) found no row and was
-- lost, and one that came before a re-registration overwrote the erasure of the previous
-- registration. The usage report counts registrations and erasures each by its own time, which
-- gives the same figures whatever order the projection sees them in.
CREATE TABLE user_erasures (
  tenant_id text        NOT NULL,
  user_key  text        NOT NULL,
  erased_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, user_key, erased_at)
);
CREATE INDEX user_erasures_at ON user_erasures (tenant_id, erased_at);

INSERT INTO user_erasures (tenant_id, user_key, erased_at)
SELECT tenant_id, user_key, erased_at FROM user_lifetimes WHERE erased_at IS NOT NULL;

-- During a rolling upgrade a reporting of the previous release still records an erasure in
-- user_lifetimes.erased_at: copy it over, so that no erasure projected meanwhile is lost. The next
-- release drops this trigger and the column.
CREATE FUNCTION user_lifetimes_copy_erasure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO user_erasures (tenant_id, user_key, erased_at)
  VALUES (NEW.tenant_id, NEW.user_key, NEW.erased_at)
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
CREATE TRIGGER user_lifetimes_copy_erasure
  AFTER UPDATE OF erased_at ON user_lifetimes
  FOR EACH ROW WHEN (NEW.erased_at IS NOT NULL)
  EXECUTE FUNCTION user_lifetimes_copy_erasure();

-- Down Migration

DROP TRIGGER user_lifetimes_copy_erasure ON user_lifetimes;
DROP FUNCTION user_lifetimes_copy_erasure();
-- Each erasure back on the latest registration before it, as the previous release keeps them.
UPDATE user_lifetimes u SET erased_at = e.erased_at
  FROM user_erasures e
 WHERE u.tenant_id = e.tenant_id AND u.user_key = e.user_key
   AND u.registered_at = (SELECT max(registered_at) FROM user_lifetimes l
                           WHERE l.tenant_id = e.tenant_id AND l.user_key = e.user_key AND l.registered_at <= e.erased_at);
DROP TABLE user_erasures;
