-- Rate limits per tenant and per user (gateway/ratelimit.py): requests per window (a minute), counted in
-- PostgreSQL so that the limits hold across workers and hosts.

-- A tenant's own limits; NULL: the settings' default (GATEWAY_RATE_LIMIT_TENANT, GATEWAY_RATE_LIMIT_USER),
-- 0: no limit. user_rate_limit applies to each user of the tenant on its own.
ALTER TABLE tenant
    ADD COLUMN rate_limit integer CHECK (rate_limit >= 0),
    ADD COLUMN user_rate_limit integer CHECK (user_rate_limit >= 0);

-- What the workers have leased of each window: `used` counts units handed out (a worker spends its lease
-- without asking again), so it never exceeds `lim`. Keyed by the token's tenant code and username (''
-- for the tenant's own count), which the request knows before it reads anything from the database.
-- `lim` is the limit the last lease read and `granted` what it handed out (for RETURNING, which sees only
-- the new row). Unlogged: the counts are worth no WAL; a crash forgets at most a minute of them.
CREATE UNLOGGED TABLE rate_limit_window (
    tenant        text NOT NULL,
    username      text NOT NULL,
    window_start  bigint NOT NULL,        -- seconds since the epoch
    lim           integer NOT NULL,
    used          integer NOT NULL,
    granted       integer NOT NULL,
    PRIMARY KEY (tenant, username, window_start)
);
-- Windows that have passed are purged by age (gateway/ratelimit.py PURGE_CHANCE).
CREATE INDEX rate_limit_window_age ON rate_limit_window (window_start);
