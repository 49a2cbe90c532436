-- Tenants, users and the change sequence every write is stamped with.

CREATE TABLE tenant (
    id          serial PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app_user (
    id                  serial PRIMARY KEY,
    tenant_id           integer NOT NULL REFERENCES tenant (id),
    username            text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 128),
    password_hash       text NOT NULL,
    role                text NOT NULL CHECK (role IN ('admin', 'writer', 'reader')),
    disabled            boolean NOT NULL DEFAULT false,
    -- Tokens issued before this instant are refused (set by passwd and disable).
    tokens_valid_after  timestamptz NOT NULL DEFAULT 'epoch',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX app_user_tenant ON app_user (tenant_id);

-- The change feed that incremental pulls (GetData with `since`) follow: one row per write statement,
-- holding the keys it changed, stamped with its transaction id. Its id comes from change_seq and is also
-- written into every record the statement changed (the record's change_seq), so a pull returns each
-- record once, at its latest change. Pulls read the feed in (xid, id, position) order and stop below the
-- oldest transaction still running, so a puller that keeps its cursor never skips a change that commits
-- late. One row per batch costs far less than a change index on every synced table, which each write
-- would have to update once per row.
CREATE SEQUENCE change_seq AS bigint;

CREATE TABLE change_log (
    id          bigint PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenant (id),
    tbl         text NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    keys        jsonb NOT NULL,  -- [[key part, ...], ...] in the order written
    logged_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX change_log_pull ON change_log (tenant_id, tbl, xid, id);
