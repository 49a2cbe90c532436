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

-- One server-wide sequence: every insert, update or delete of a synced record takes the next value.
-- Pulls order by (change_xid, change_seq) and stop below the oldest running transaction, so a
-- puller that keeps its cursor never skips a change that commits late.
-- CACHE: each session takes numbers in blocks, sparing a shared lock per row. Numbers then interleave
-- across sessions, which is fine: order comes from the transaction id first, the sequence within it.
CREATE SEQUENCE change_seq AS bigint CACHE 1000;
