-- A tenant works on its first request: it has a base currency (the currency a voucher is in when it names
-- none, and the currency the ledger is kept in), created with the tenant together with a chart of accounts.

ALTER TABLE tenant ADD COLUMN base_currency text NOT NULL DEFAULT 'VND' CHECK (base_currency ~ '^[A-Z]{3}$');

-- Token revocation that does not depend on the clock: passwd and disable bump the user's version, tokens
-- carry the version they were issued under, and a token of an older version is refused. Timestamps in
-- tokens count whole seconds, so a token issued in the second of a disable would pass again on enable.
ALTER TABLE app_user ADD COLUMN token_version integer NOT NULL DEFAULT 0;

-- The chart of accounts the tenant was provisioned with (c200, c133 or none), so that `gateway tenant setup`
-- adds what is missing from that chart and not from another; NULL for a tenant never provisioned.
ALTER TABLE tenant ADD COLUMN chart text CHECK (chart IN ('c200', 'c133', 'none'));
