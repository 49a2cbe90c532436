-- Login attempts counted per client address and username (the pair), and per client address alone (username
-- ''), in a fixed window that opens with the first attempt counted. Held here rather than in a worker's
-- memory so that the limits hold across workers and hosts. An attempt is counted before its password is
-- verified (so that concurrent attempts cannot slip past a limit) and a successful one is taken off again,
-- so the counts are failed logins. Unlogged: the counts are worth no WAL, and losing them in a crash only
-- forgets a quarter of an hour of failures.
CREATE UNLOGGED TABLE login_throttle (
    client_addr   text NOT NULL,
    username      text NOT NULL,          -- '' for the address's own count
    window_start  timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 1,
    PRIMARY KEY (client_addr, username)
);
-- Rows whose window has passed are purged by age (gateway/auth.py THROTTLE_PURGE_CHANCE).
CREATE INDEX login_throttle_age ON login_throttle (window_start);
