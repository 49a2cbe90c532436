-- Row-level security: a second wall behind the `tenant_id = $1` every query carries. A query that forgot its
-- tenant filter still sees, and may write, only the rows of the tenant the request's token names.
--
-- The tenant is the custom setting gateway.tenant_id, set by gateway_principal() (below) in the statement that
-- reads the request's user anyway, and reset before the connection serves another request (gateway/db.py).
-- With no tenant set, a policy matches no row: the wall fails closed.
--
-- Two roles (README, Administration):
--   * the owner, who runs the migrations and the command line's administration across tenants. The tables are
--     FORCEd, so the owner is held to the policies too; it sees every row through a policy of its own
--     (gateway_maintenance, created below for the role migrating). A superuser bypasses row security anyway.
--   * gateway_app, the role the API connects as: neither superuser nor BYPASSRLS, with the privileges the API
--     needs and no more. Roles belong to the server, not the database: several databases of one server share
--     it, each granting it its own privileges.
--
-- Tables holding a tenant_id without a policy: none. Tables without tenant rows, left without row security:
--   * tenant: the directory of tenants (code, name, settings). Read by code before any tenant is known (the
--     audit row of a refused token, the rate limits of a token's tenant); the API may only read it.
--   * login_throttle: failed logins per client address and username, counted before any user is known.
--   * revoked_access: denied access tokens' ids (jti), looked up by id.
--   * rate_limit_window (0020): request counts per tenant code and user, leased before anything is read.
--   * schema_migrations: the migrations applied; the API has no privilege on it.
-- The signing keys live outside the database (gateway/keys.py).

-- The current tenant, or NULL. After a RESET the setting reads '' rather than NULL, hence nullif. The policies
-- call it as a subquery, `(SELECT gateway_tenant())`: evaluated once per statement (an InitPlan), not once per
-- row written, and still an index condition beside the `tenant_id = $1` every query carries.
CREATE FUNCTION gateway_tenant() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('gateway.tenant_id', true), '')::integer $$;

-- The application role; created once per server, whichever database migrates first. Another database of the
-- same server creating it in the same instant meets a duplicate, which is as good.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gateway_app') THEN
        BEGIN
            CREATE ROLE gateway_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END $$;

-- Every table with a tenant_id: row security enabled and forced, the tenant's rows for everyone, every row for
-- the owner.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
          AND EXISTS (SELECT FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY gateway_tenant ON %s USING (tenant_id = (SELECT gateway_tenant()))'
                       ' WITH CHECK (tenant_id = (SELECT gateway_tenant()))', t);
        EXECUTE format('CREATE POLICY gateway_maintenance ON %s TO %I USING (true) WITH CHECK (true)',
                       t, current_user);
    END LOOP;
END $$;

-- The request's user, as the statement user_for_token read it, and its tenant set for the rest of the
-- session (until the pool's reset): one round trip, as before. Definer's rights: the user is looked up by
-- name before its tenant is known. No user: no tenant.
CREATE FUNCTION gateway_principal(p_username text, p_jti text)
RETURNS TABLE (username text, role text, disabled boolean, token_version integer, tenant_id integer,
               tenant_code text, tokens_valid_after_epoch bigint, role_permissions text[], access_revoked boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    found_row record;
BEGIN
    SELECT u.username, u.role, u.disabled, u.token_version, u.tenant_id, t.code AS tenant_code,
           extract(epoch FROM date_trunc('second', u.tokens_valid_after))::bigint AS tokens_valid_after_epoch,
           r.permissions AS role_permissions,
           EXISTS (SELECT FROM revoked_access x WHERE x.jti = p_jti) AS access_revoked
      INTO found_row
      FROM app_user u JOIN tenant t ON t.id = u.tenant_id
      LEFT JOIN tenant_role r ON r.tenant_id = u.tenant_id AND r.name = u.role
     WHERE u.username = p_username;
    PERFORM set_config('gateway.tenant_id', coalesce(found_row.tenant_id::text, ''), false);
    IF found_row.username IS NOT NULL THEN
        RETURN QUERY SELECT found_row.username, found_row.role, found_row.disabled, found_row.token_version,
                            found_row.tenant_id, found_row.tenant_code, found_row.tokens_valid_after_epoch,
                            found_row.role_permissions, found_row.access_revoked;
    END IF;
END $$;

-- What a login needs of the user it names, before any tenant is known: no tenant is set.
CREATE FUNCTION gateway_user_for_login(p_username text)
RETURNS TABLE (username text, password_hash text, role text, disabled boolean, token_version integer,
               tenant_code text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT u.username, u.password_hash, u.role, u.disabled, u.token_version, t.code
    FROM app_user u JOIN tenant t ON t.id = u.tenant_id
    WHERE u.username = p_username
$$;

-- The tenant of the user named, set for the session as gateway_principal sets it (none for nobody); returns it.
CREATE FUNCTION gateway_enter_user_tenant(p_username text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    found_tenant integer := (SELECT u.tenant_id FROM app_user u WHERE u.username = p_username);
BEGIN
    PERFORM set_config('gateway.tenant_id', coalesce(found_tenant::text, ''), false);
    RETURN found_tenant;
END $$;

-- The tenant of the refresh token whose SHA-256 is given, set likewise (none for an unknown token).
CREATE FUNCTION gateway_enter_refresh_tenant(p_token_hash bytea) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    found_tenant integer := (SELECT r.tenant_id FROM refresh_token r WHERE r.token_hash = p_token_hash);
BEGIN
    PERFORM set_config('gateway.tenant_id', coalesce(found_tenant::text, ''), false);
    RETURN found_tenant;
END $$;

-- Audit rows are written under the tenant they concern, which is often not yet (or never) the session's: a
-- refused token's, a failed login's. These two write them with the owner's rights; the API itself may read and
-- purge only its tenant's rows.
CREATE FUNCTION gateway_audit_insert(p_tenant_id integer, p_tenant text, p_username text, p_kind text,
                                     p_endpoint text, p_form text, p_counts jsonb, p_idempotency_key text,
                                     p_request_id text, p_client_addr text, p_duration_ms double precision,
                                     p_status integer, p_detail text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    INSERT INTO audit_log (tenant_id, username, kind, endpoint, form, counts, idempotency_key, request_id,
                           client_addr, duration_ms, status, detail)
    VALUES (coalesce(p_tenant_id, (SELECT id FROM tenant WHERE code = p_tenant)), p_username, p_kind, p_endpoint,
            p_form, p_counts, p_idempotency_key, p_request_id, p_client_addr, p_duration_ms, p_status, p_detail);
END $$;

CREATE FUNCTION gateway_audit_insert_user(p_username text, p_kind text, p_endpoint text, p_request_id text,
                                          p_client_addr text, p_duration_ms double precision, p_status integer,
                                          p_detail text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    INSERT INTO audit_log (tenant_id, username, kind, endpoint, request_id, client_addr, duration_ms, status,
                           detail)
    SELECT u.tenant_id, u.username, p_kind, p_endpoint, p_request_id, p_client_addr, p_duration_ms, p_status,
           p_detail
    FROM (SELECT) AS one LEFT JOIN app_user u ON u.username = p_username;
END $$;

-- What the API may do: read and write the tables (row security decides which rows), read the tenant
-- directory, use the sequences and functions, and stage batches in temporary tables.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO gateway_app', current_database());
END $$;
GRANT USAGE ON SCHEMA public TO gateway_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO gateway_app;
REVOKE INSERT, UPDATE, DELETE ON tenant FROM gateway_app;
REVOKE ALL ON schema_migrations FROM gateway_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO gateway_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO gateway_app;
-- The definer's functions read across tenants (a password hash, too): for the API's role only, not for any
-- role that may connect.
REVOKE EXECUTE ON FUNCTION gateway_principal(text, text), gateway_user_for_login(text),
    gateway_enter_user_tenant(text), gateway_enter_refresh_tenant(bytea),
    gateway_audit_insert(integer, text, text, text, text, text, jsonb, text, text, text, double precision, integer,
                         text),
    gateway_audit_insert_user(text, text, text, text, text, double precision, integer, text)
    FROM PUBLIC;
-- Tables, sequences and functions the later migrations create (as the same owner) come with the same.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO gateway_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO gateway_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO gateway_app;
