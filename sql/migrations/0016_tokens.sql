-- The token life cycle (gateway/tokens.py): refresh tokens, rotated on every use, and the access tokens
-- revoked before their expiry.
--
-- A refresh token is an opaque random string; only its SHA-256 is kept, so the table hands nothing usable to
-- whoever reads it. Every token a login hands out starts a family (one login, one device); each use spends
-- the token (used_at) and adds its successor to the family. A spent token presented again means that two
-- parties hold the family: all of it is revoked (revoked_at). The version is the user's token version at the
-- login: a password change, disable or role change moves the user's on and so ends the family.
CREATE TABLE refresh_token (
    token_hash      bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    family          uuid NOT NULL,
    user_id         integer NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    tenant_id       integer NOT NULL REFERENCES tenant (id),
    token_version   integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    revoked_at      timestamptz,
    -- The access token handed out with this refresh token: denied (revoked_access) when the family is revoked.
    access_jti      text NOT NULL,
    access_expires  timestamptz NOT NULL
);
CREATE INDEX refresh_token_family ON refresh_token (family);
CREATE INDEX refresh_token_user ON refresh_token (user_id);
-- Rows past their expiry are purged by age (gateway/tokens.py PURGE_CHANCE).
CREATE INDEX refresh_token_expiry ON refresh_token (expires_at);

-- Access tokens (by jti) refused before their expiry: those of a revoked refresh family. Read with the user
-- on every request (user_for_token), so the check costs an index probe, not a round trip; a row is purged
-- once its token has expired anyway, which keeps the table as small as the tokens revoked in a token lifetime.
CREATE TABLE revoked_access (
    jti         text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX revoked_access_expiry ON revoked_access (expires_at);
