-- Named statements, loaded once by gateway.db.load_queries.

-- name: user_for_login
SELECT u.username, u.password_hash, u.role, u.disabled, t.code AS tenant_code
FROM app_user u JOIN tenant t ON t.id = u.tenant_id
WHERE u.username = $1;

-- name: user_for_token
SELECT u.username, u.role, u.disabled, u.tenant_id, t.code AS tenant_code,
       extract(epoch FROM date_trunc('second', u.tokens_valid_after))::bigint
           AS tokens_valid_after_epoch
FROM app_user u JOIN tenant t ON t.id = u.tenant_id
WHERE u.username = $1;

-- name: tenant_add
INSERT INTO tenant (code, name) VALUES ($1, $2) RETURNING id;

-- name: tenant_by_code
SELECT id, code, name FROM tenant WHERE code = $1;

-- name: tenant_lock
UPDATE tenant SET locked_until = $2 WHERE code = $1 RETURNING id;

-- name: tenant_count
SELECT count(*) FROM tenant;

-- name: user_add
INSERT INTO app_user (tenant_id, username, password_hash, role) VALUES ($1, $2, $3, $4) RETURNING id;

-- name: user_passwd
UPDATE app_user SET password_hash = $2, tokens_valid_after = now(), updated_at = now()
WHERE username = $1 RETURNING id;

-- name: user_set_disabled
UPDATE app_user
SET disabled = $2,
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
