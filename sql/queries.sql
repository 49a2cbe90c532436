-- Named statements, loaded once by gateway.db.load_queries.

-- name: user_for_login
SELECT u.username, u.password_hash, u.role, u.disabled, u.token_version, t.code AS tenant_code
FROM app_user u JOIN tenant t ON t.id = u.tenant_id
WHERE u.username = $1;

-- name: user_for_token
SELECT u.username, u.role, u.disabled, u.token_version, u.tenant_id, t.code AS tenant_code,
       extract(epoch FROM date_trunc('second', u.tokens_valid_after))::bigint
           AS tokens_valid_after_epoch
FROM app_user u JOIN tenant t ON t.id = u.tenant_id
WHERE u.username = $1;

-- name: tenant_add
INSERT INTO tenant (code, name) VALUES ($1, $2) RETURNING id;

-- name: tenant_create
INSERT INTO tenant (code, name, base_currency) VALUES ($1, $2, $3) RETURNING id;

-- name: tenant_by_code
SELECT id, code, name, base_currency, chart FROM tenant WHERE code = $1;

-- name: tenant_all
SELECT id, code, name, base_currency, chart FROM tenant ORDER BY code;

-- name: tenant_list
SELECT t.code, t.name, t.base_currency, t.locked_until, count(u.id) AS users
FROM tenant t LEFT JOIN app_user u ON u.tenant_id = t.id
GROUP BY t.id
ORDER BY t.code;

-- name: tenant_lock_for_setup
-- Provisioning runs for one tenant one after the other (it reads what is missing, then writes it).
-- NO KEY UPDATE leaves the tenant's syncs alone (their change-log rows only take KEY SHARE on it).
SELECT id FROM tenant WHERE id = $1 FOR NO KEY UPDATE;

-- name: tenant_set_chart
-- A tenant keeps the first real chart it was provisioned with; `none` is recorded only while there is none.
UPDATE tenant SET chart = $2
WHERE id = $1 AND (chart IS NULL OR (chart = 'none' AND $2::text <> 'none'));

-- name: currency_codes_present
-- Deleted rows count as present: a currency the tenant deleted stays deleted.
SELECT currency_code FROM currency WHERE tenant_id = $1 AND currency_code = ANY($2::text[]);

-- name: account_codes_present
-- Deleted rows count as present: an account the tenant deleted stays deleted.
SELECT account_code FROM account WHERE tenant_id = $1 AND account_code = ANY($2::text[]);

-- name: posting_roles_add
INSERT INTO posting_account (tenant_id, role, account_code)
SELECT $1, u.role, u.account_code FROM unnest($2::text[], $3::text[]) AS u(role, account_code)
ON CONFLICT (tenant_id, role) DO NOTHING
RETURNING role;

-- name: tenant_lock
-- Run after reference_gate_exclusive: voucher writes under way finish under the old period first.
UPDATE tenant SET locked_until = $2 WHERE id = $1 RETURNING id;

-- name: reference_gate_shared
-- The tenant's reference gate (gateway/references.py), held by a voucher write until it commits.
SELECT pg_advisory_xact_lock_shared(1450738502, $1);

-- name: reference_gate_exclusive
-- The tenant's reference gate, held by a delete of referenced masters or a change of the locked period.
SELECT pg_advisory_xact_lock(1450738502, $1);

-- name: tenant_count
SELECT count(*) FROM tenant;

-- name: user_add
INSERT INTO app_user (tenant_id, username, password_hash, role) VALUES ($1, $2, $3, $4) RETURNING id;

-- name: user_list
SELECT u.username, t.code AS tenant, u.role, u.disabled
FROM app_user u JOIN tenant t ON t.id = u.tenant_id
WHERE $1::text IS NULL OR t.code = $1
ORDER BY t.code, u.username;

-- name: user_passwd
UPDATE app_user
SET password_hash = $2, token_version = token_version + 1, tokens_valid_after = now(), updated_at = now()
WHERE username = $1 RETURNING id;

-- name: user_set_disabled
UPDATE app_user
SET disabled = $2,
    token_version = token_version + CASE WHEN $2 THEN 1 ELSE 0 END,
    tokens_valid_after = CASE WHEN $2 THEN now() ELSE tokens_valid_after END,
    updated_at = now()
WHERE username = $1 RETURNING id;

-- name: idempotency_claim
-- Claims a key (new, or stale: still pending after $4 seconds); returns true when this request owns it.
INSERT INTO idempotency_key AS k (tenant_id, key, request_hash) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, created_at = now()
    WHERE k.response_status IS NULL AND k.created_at < now() - make_interval(secs => $4)
      AND k.request_hash = EXCLUDED.request_hash
RETURNING true;

-- name: idempotency_get
SELECT request_hash, response_status, response_body FROM idempotency_key WHERE tenant_id = $1 AND key = $2;

-- name: idempotency_store
UPDATE idempotency_key SET response_status = $3, response_body = $4, completed_at = now()
WHERE tenant_id = $1 AND key = $2;

-- name: idempotency_release
DELETE FROM idempotency_key WHERE tenant_id = $1 AND key = $2 AND response_status IS NULL;

-- name: idempotency_purge
DELETE FROM idempotency_key WHERE created_at < now() - interval '24 hours';
