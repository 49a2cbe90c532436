-- The audit log (gateway/audit.py): one row per write request whose token was accepted, and one per
-- authentication event (logins, refused tokens, the CLI's password, role and disable changes). Never a
-- password, a token or a request body: what was done, by whom, from where, when, and how it ended.
--
-- No foreign keys: the log is history, and outlives what it names; and a write request's row costs one
-- insert, with nothing to lock or check. tenant_id is NULL for events before a tenant is known (a login
-- with an unknown name, a token that is no token of ours).
CREATE TABLE audit_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    tenant_id        integer,
    username         text,                   -- the user's name; NULL when it names nobody
    -- write, login, login_failed, login_throttled, token_refused, password_changed, role_changed,
    -- user_disabled, user_enabled (gateway/audit.py KINDS); kept open to kinds added later.
    kind             text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
    endpoint         text,                   -- SyncData, SyncVoucher, GetData, getToken, cli
    form             text,
    counts           jsonb,                  -- {"inserted", "updated", "unchanged", "deleted", "failed"}
    idempotency_key  text,
    request_id       text,
    client_addr      text,
    duration_ms      double precision,
    status           integer,                -- the answer's code (Fast's body code: 200, 601, 4xx, 5xx)
    detail           text                    -- a refusal's reason, a new role: never a secret
);
-- getAuditLog pages a tenant's rows by id, newest first or after a position (`since`).
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);
-- Retention purges by age (GATEWAY_AUDIT_RETENTION_DAYS). Rows arrive in time order, so a BRIN index finds
-- the old ones for a fraction of what a B-tree would cost every write.
CREATE INDEX audit_log_at ON audit_log USING brin (at);
