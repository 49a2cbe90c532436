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
-- The tenant's gate (gateway/references.py), held by every write of the tenant's data until it commits.
SELECT pg_advisory_xact_lock_shared(1450738502, $1);

-- name: reference_gate_exclusive
-- The tenant's reference gate, held by a delete of referenced masters or a change of the locked period.
SELECT pg_advisory_xact_lock(1450738502, $1);

-- name: feed_cutoff
-- The change-feed position (a transaction id, as text) below which every change of tenant $1 is committed:
-- the oldest transaction among the sessions holding the tenant's gate (every write holds it, gateway/feed.py),
-- else the next transaction id to be assigned. pg_locks gives 32-bit ids: each is widened against the next
-- full id, which no running transaction is more than 2^31 behind.
WITH nxt AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x),
gate AS (SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND classid = 1450738502 AND objid = $1 AND objsubid = 2 AND granted),
own AS (SELECT l.transactionid::text::bigint AS xid FROM pg_locks l JOIN gate g ON g.pid = l.pid
        WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted)
SELECT least(nxt.x, min(nxt.x - ((nxt.x % 4294967296 - own.xid + 4294967296) % 4294967296)))::text
FROM nxt LEFT JOIN own ON true
GROUP BY nxt.x;

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

-- name: user_set_role
-- A role change ends the user's tokens, as passwd and disable do: each token carries the role it was issued
-- with, and the version makes the end exact (a token issued in the second of the change included).
UPDATE app_user
SET role = $2, token_version = token_version + 1, tokens_valid_after = now(), updated_at = now()
WHERE username = $1 RETURNING id;

-- name: idempotency_lock
-- The key's session lock ($1, from idempotency.lock_id), held by the request that claimed the key for as long
-- as it runs; PostgreSQL releases it should that request's connection or process die. True: taken.
SELECT pg_try_advisory_lock($1);

-- name: idempotency_unlock
SELECT pg_advisory_unlock($1);

-- name: idempotency_claim
-- Claims a key for a request that holds its lock (idempotency_lock): a new key, or one still pending from a
-- request that died, since a live one would hold the lock. Returns true when this request owns the key.
INSERT INTO idempotency_key AS k (tenant_id, key, request_hash) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, key) DO UPDATE
    SET created_at = now()
    WHERE k.response_status IS NULL AND k.request_hash = EXCLUDED.request_hash
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

-- Login throttling

-- name: login_attempt_begin
-- Counts a login attempt against the pair ($1 client address, $2 username) and against the address alone
-- (username ''), unless a count has reached its limit ($4 for the pair, $5 for the address) in its window
-- of $3 seconds: then nothing is counted and the answer is the seconds until the refusing windows close.
-- NULL: counted, go ahead. A window that has passed starts again. The rows are locked in username order,
-- the address's first (as login_attempt_succeeded does), so concurrent attempts queue instead of slipping
-- past a limit together.
WITH open_window AS (
    SELECT username, attempts, window_start FROM login_throttle
    WHERE client_addr = $1::text AND username IN ('', $2::text)
      AND window_start > now() - make_interval(secs => $3::float8)
    ORDER BY username
    FOR UPDATE
), refusing AS (
    SELECT window_start FROM open_window
    WHERE attempts >= CASE WHEN username = '' THEN $5::integer ELSE $4::integer END
), counted AS (
    INSERT INTO login_throttle AS t (client_addr, username)
    SELECT $1, u.username FROM unnest(ARRAY['', $2]) WITH ORDINALITY AS u(username, n)
    WHERE NOT EXISTS (SELECT FROM refusing)
    ORDER BY u.n
    ON CONFLICT (client_addr, username) DO UPDATE
    SET window_start = CASE WHEN t.window_start > now() - make_interval(secs => $3) THEN t.window_start
                            ELSE now() END,
        attempts = CASE WHEN t.window_start > now() - make_interval(secs => $3) THEN t.attempts + 1 ELSE 1 END
)
SELECT greatest(1, ceil(extract(epoch FROM max(window_start) + make_interval(secs => $3) - now())))::integer
FROM refusing
HAVING count(*) > 0;

-- name: login_attempt_succeeded
-- A successful login clears the pair's count ($1 client address, $2 username) and takes its own attempt off
-- the address's, which so counts failures only. Locks in the order login_attempt_begin does.
WITH locked AS (
    SELECT username FROM login_throttle WHERE client_addr = $1 AND username IN ('', $2)
    ORDER BY username
    FOR UPDATE
)
UPDATE login_throttle t
SET attempts = CASE WHEN t.username = '' THEN greatest(t.attempts - 1, 0) ELSE 0 END
FROM locked
WHERE t.client_addr = $1 AND t.username = locked.username;

-- name: login_throttle_purge
-- Counts whose window of $1 seconds has passed count nothing any more.
DELETE FROM login_throttle WHERE window_start <= now() - make_interval(secs => $1);

-- Vouchers (gateway/vouchers.py). $1 is the tenant, $2 the form, $3 the batch's voucher ids. Stored vouchers
-- are found key by key (a lateral look-up that cannot be flattened), never by scanning the tenant's form, so
-- a never-analysed table is planned as well as an analysed one.

-- name: voucher_tenant
-- The tenant's locked period and base currency, read under its gate.
SELECT locked_until, base_currency FROM tenant WHERE id = $1;

-- name: voucher_currencies
-- The live currencies among $2 and their decimal places.
SELECT currency_code, decimal_places FROM currency
WHERE tenant_id = $1 AND NOT deleted AND currency_code = ANY($2::text[]);

-- name: voucher_tax_rates
-- The rates of the live tax codes among $2.
SELECT tax_code, tax_rate FROM tax_code
WHERE tenant_id = $1 AND NOT deleted AND tax_code = ANY($2::text[]);

-- name: voucher_item_units
-- Per stock-tracked item among $2: its base unit and the units it has a live conversion for.
SELECT i.item_code, i.uom, COALESCE(array_agg(c.uom) FILTER (WHERE c.uom IS NOT NULL), '{}') AS units
FROM item i
LEFT JOIN unit_conversion c ON c.tenant_id = i.tenant_id AND c.item_code = i.item_code AND NOT c.deleted
WHERE i.tenant_id = $1 AND i.item_code = ANY($2::text[]) AND NOT i.deleted AND i.stock_tracked = 1
GROUP BY i.item_code, i.uom;

-- name: voucher_stored_numbers
-- The numbers the stored vouchers among $3 already have.
SELECT r.voucher_id, r.voucher_number
FROM unnest($3::text[]) AS k(voucher_id)
CROSS JOIN LATERAL (SELECT * FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r
WHERE r.form = $2 AND r.voucher_number IS NOT NULL;

-- name: voucher_next_numbers
-- Takes $3 numbers of the tenant's counter for the form; the last of them.
INSERT INTO voucher_counter AS c (tenant_id, form, last_number) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, form) DO UPDATE SET last_number = c.last_number + EXCLUDED.last_number
RETURNING last_number;

-- name: voucher_locked
-- The live stored vouchers among $3 dated in the locked period (up to $4).
SELECT r.voucher_id, r.voucher_date
FROM unnest($3::text[]) AS k(voucher_id)
CROSS JOIN LATERAL (SELECT * FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r
WHERE r.form = $2 AND NOT r.deleted AND r.voucher_date <= $4;

-- name: voucher_live_invoices
-- The live invoices among $3 (of form $2), share-locked until the paying voucher commits: a cancellation
-- of one waits for it.
SELECT r.voucher_id
FROM unnest($3::text[]) AS k(voucher_id)
CROSS JOIN LATERAL (SELECT * FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r
WHERE r.form = $2 AND NOT r.deleted
FOR SHARE;

-- name: voucher_lock
-- The stored vouchers among $3 locked in key order, before a batch that both writes and cancels (or cancels
-- several) touches them: two such batches then meet in the same order and cannot deadlock. Key by key, in
-- the keys' order (a scan of the form's primary key would give that order too, over the tenant's whole form).
SELECT 1
FROM (SELECT k.voucher_id FROM unnest($3::text[]) AS k(voucher_id) ORDER BY 1) k
CROSS JOIN LATERAL (SELECT 1 FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 AND form = $2
                    OFFSET 0) r
FOR NO KEY UPDATE OF r;

-- name: voucher_upsert
-- Merges the batch's headers ($3 ... $11, one array per column) in key order; the ones that changed are
-- stamped with one change number and logged in the change feed. Returns them, inserted or updated.
WITH c AS (SELECT nextval('change_seq') AS id),
w AS (
    INSERT INTO voucher AS t (tenant_id, form, voucher_id, voucher_number, voucher_date, partner_code, currency,
                              exchange_rate, total_amount, description, document, deleted, change_seq, updated_at)
    SELECT $1, $2, u.voucher_id, u.voucher_number, u.voucher_date, u.partner_code, u.currency, u.exchange_rate,
           u.total_amount, u.description, u.document, false, (SELECT id FROM c), now()
    FROM unnest($3::text[], $4::text[], $5::date[], $6::text[], $7::text[], $8::numeric[], $9::numeric[],
                $10::text[], $11::jsonb[])
         AS u(voucher_id, voucher_number, voucher_date, partner_code, currency, exchange_rate, total_amount,
              description, document)
    ORDER BY u.voucher_id
    ON CONFLICT (tenant_id, form, voucher_id) DO UPDATE SET
        voucher_number = EXCLUDED.voucher_number, voucher_date = EXCLUDED.voucher_date,
        partner_code = EXCLUDED.partner_code, currency = EXCLUDED.currency,
        exchange_rate = EXCLUDED.exchange_rate, total_amount = EXCLUDED.total_amount,
        description = EXCLUDED.description, document = EXCLUDED.document, deleted = false,
        change_seq = EXCLUDED.change_seq, updated_at = EXCLUDED.updated_at
    WHERE (t.document, t.deleted) IS DISTINCT FROM (EXCLUDED.document, false)
    RETURNING (xmax = 0) AS inserted, t.voucher_id
),
logged AS (
    INSERT INTO change_log (id, tenant_id, tbl, keys)
    SELECT (SELECT id FROM c), $1, $2, to_jsonb(array_agg(ARRAY[voucher_id])) FROM w HAVING count(*) > 0
)
SELECT inserted, voucher_id FROM w;

-- name: voucher_to_cancel
-- The live vouchers among $3 to cancel, with where their rows are (for voucher_cancel_rows).
SELECT r.voucher_id, r.ctid
FROM unnest($3::text[]) AS k(voucher_id)
CROSS JOIN LATERAL (SELECT voucher_id, ctid, form, deleted FROM voucher
                    WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r
WHERE r.form = $2 AND NOT r.deleted;

-- name: voucher_cancel_rows
-- Cancels the vouchers at the rows $3 (tombstones), stamped and logged as voucher_upsert does; a row updated
-- since it was found is skipped (its ctid changed) and cancelled by voucher_cancel, by key, instead.
WITH c AS (SELECT nextval('change_seq') AS id),
w AS (
    UPDATE voucher AS t SET deleted = true, change_seq = (SELECT id FROM c), updated_at = now()
    WHERE t.ctid = ANY($3::tid[]) AND t.tenant_id = $1 AND t.form = $2 AND NOT t.deleted
    RETURNING t.voucher_id
),
logged AS (
    INSERT INTO change_log (id, tenant_id, tbl, keys)
    SELECT (SELECT id FROM c), $1, $2, to_jsonb(array_agg(ARRAY[voucher_id])) FROM w HAVING count(*) > 0
)
SELECT voucher_id FROM w;

-- name: voucher_cancel
-- Cancels the live vouchers among $3 by key (those voucher_cancel_rows found moved).
WITH c AS (SELECT nextval('change_seq') AS id),
w AS (
    UPDATE voucher AS t SET deleted = true, change_seq = (SELECT id FROM c), updated_at = now()
    FROM unnest($3::text[]) AS u(voucher_id)
    WHERE t.tenant_id = $1 AND t.form = $2 AND t.voucher_id = u.voucher_id AND NOT t.deleted
    RETURNING t.voucher_id
),
logged AS (
    INSERT INTO change_log (id, tenant_id, tbl, keys)
    SELECT (SELECT id FROM c), $1, $2, to_jsonb(array_agg(ARRAY[voucher_id])) FROM w HAVING count(*) > 0
)
SELECT voucher_id FROM w;

-- Goods received not invoiced (gateway/grni.py). Receipt lines are found through voucher_line_receipt_key,
-- the invoice lines citing them through voucher_line_receipt, the tenant compared in a form no index serves
-- (IS NOT DISTINCT FROM) so that no index leading with tenant_id is taken instead (migration 0014).

-- name: grni_lock_receipts
-- The live goods receipts among $2 and their partners, locked in key order: purchase invoices citing one,
-- and its own replacement or cancellation, pass its checks one at a time.
SELECT r.voucher_id, r.partner_code
FROM (SELECT k.voucher_id FROM unnest($2::text[]) AS k(voucher_id) ORDER BY 1) k
CROSS JOIN LATERAL (SELECT voucher_id, partner_code FROM voucher WHERE voucher_id = k.voucher_id
                    AND tenant_id = $1 AND form = 'setReceipt' AND NOT deleted OFFSET 0) r
FOR NO KEY UPDATE OF r;

-- name: grni_receipt_lines
-- The receipt lines ($2, $3: receipt ids and line numbers) with their item, unit, site, quantity, and whether
-- the item's stock is tracked.
SELECT k.voucher_id, k.line_no, r.item_code, r.uom, r.site_code, r.quantity,
       COALESCE(i.stock_tracked, 0) = 1 AS tracked
FROM unnest($2::text[], $3::integer[]) AS k(voucher_id, line_no)
CROSS JOIN LATERAL (SELECT item_code, uom, site_code, quantity FROM voucher_line
                    WHERE voucher_id = k.voucher_id AND line_no = k.line_no AND tenant_id IS NOT DISTINCT FROM $1
                    AND form = 'setReceipt' OFFSET 0) r
LEFT JOIN LATERAL (SELECT stock_tracked FROM item WHERE tenant_id = $1 AND item_code = r.item_code AND NOT deleted
                   OFFSET 0) i ON true;

-- name: grni_invoiced
-- Per line of the receipts $2 that live purchase invoices (other than $3) cite: the quantity they invoice,
-- its item, unit and site, and the invoices. Lines exist only for live vouchers (a cancelled one's go).
SELECT p.receipt_id, p.receipt_line, sum(p.quantity) AS quantity, min(p.item_code) AS item_code,
       min(p.uom) AS uom, min(p.site_code) AS site_code, array_agg(DISTINCT p.voucher_id) AS invoices
FROM unnest($2::text[]) AS k(receipt_id)
CROSS JOIN LATERAL (SELECT form, voucher_id, receipt_id, receipt_line, item_code, uom, site_code, quantity
                    FROM voucher_line WHERE receipt_id = k.receipt_id AND tenant_id IS NOT DISTINCT FROM $1
                    OFFSET 0) p
WHERE p.form = 'setPurchaseInvoice' AND p.voucher_id <> ALL($3::text[])
GROUP BY p.receipt_id, p.receipt_line;

-- Settlement (gateway/settlement.py): payments and returns settling invoices, checked inside the write. $1 is
-- the tenant, $2 the invoice form, $3 the invoices' ids; every look-up goes key by key.

-- name: settlement_control_accounts
-- The tenant's accounts of the roles $2 (receivable, payable) where it set its own.
SELECT role, account_code FROM posting_account WHERE tenant_id = $1 AND role = ANY($2::text[]);

-- name: settlement_lock_invoices
-- The live invoices among $3, locked in key order until the settling voucher commits: a second payment of
-- one, a cancellation or a replacement waits, then sees what this one settled.
SELECT r.voucher_id, r.partner_code, r.currency, r.total_amount, r.voucher_date
FROM (SELECT DISTINCT k.voucher_id FROM unnest($3::text[]) AS k(voucher_id) ORDER BY 1) k
CROSS JOIN LATERAL (SELECT * FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r
WHERE r.form = $2 AND NOT r.deleted
FOR NO KEY UPDATE OF r;

-- name: settlement_settled
-- What the stored settlements of the invoices $3 take off each in its currency, other than those of the
-- vouchers $5 of form $4 (which the batch replaces). Run after settlement_lock_invoices, as a statement of
-- its own, so that it sees what a voucher it waited for committed.
SELECT k.invoice_id, sum(COALESCE(a.invoice_amount, a.amount)) AS settled
FROM unnest($3::text[]) AS k(invoice_id)
CROSS JOIN LATERAL (SELECT * FROM voucher_allocation a WHERE a.tenant_id = $1 AND a.invoice_form = $2
                    AND a.invoice_id = k.invoice_id OFFSET 0) a
WHERE NOT (a.form = $4 AND a.voucher_id = ANY($5::text[]))
GROUP BY k.invoice_id;

-- name: settlement_invoice_lines
-- The invoice lines ($3 invoice, $4 line number) that returns cite: item, unit, quantity sold, and what the
-- stored returns other than the vouchers $6 of form $5 took back of each.
SELECT k.invoice_id, k.line_no, l.item_code, l.uom, l.quantity, COALESCE(s.returned, 0) AS returned
FROM unnest($3::text[], $4::integer[]) AS k(invoice_id, line_no)
CROSS JOIN LATERAL (SELECT l.item_code, l.uom, l.quantity FROM voucher_line l WHERE l.tenant_id = $1
                    AND l.form = $2 AND l.voucher_id = k.invoice_id AND l.line_no = k.line_no OFFSET 0) l
CROSS JOIN LATERAL (SELECT sum(a.quantity) AS returned FROM voucher_allocation a
                    WHERE a.tenant_id = $1 AND a.invoice_form = $2 AND a.invoice_id = k.invoice_id
                      AND a.invoice_line = k.line_no AND NOT (a.form = $5 AND a.voucher_id = ANY($6::text[]))
                    OFFSET 0) s;

-- name: settlement_invoice_guard
-- The stored live invoices among $3 that vouchers settle: partner, currency, what is settled in the
-- invoice's currency, by whom, and the quantities returned per invoice line. The batch's vouchers are
-- locked first (voucher_lock), so what a settling voucher it waited for committed is seen.
SELECT r.voucher_id, r.partner_code, r.currency, a.settled, a.settled_by,
       (SELECT jsonb_object_agg(x.invoice_line, x.quantity)
        FROM (SELECT s.invoice_line, sum(s.quantity) AS quantity FROM voucher_allocation s
              WHERE s.tenant_id = $1 AND s.invoice_form = $2 AND s.invoice_id = r.voucher_id
                AND s.invoice_line IS NOT NULL
              GROUP BY s.invoice_line) x) AS returned
FROM unnest($3::text[]) AS k(voucher_id)
CROSS JOIN LATERAL (SELECT * FROM voucher WHERE voucher_id = k.voucher_id AND tenant_id = $1 OFFSET 0) r
CROSS JOIN LATERAL (SELECT sum(COALESCE(a.invoice_amount, a.amount)) AS settled,
                           array_agg(DISTINCT a.form || ' ''' || a.voucher_id || '''') AS settled_by
                    FROM voucher_allocation a
                    WHERE a.tenant_id = $1 AND a.invoice_form = $2 AND a.invoice_id = k.voucher_id OFFSET 0) a
WHERE r.form = $2 AND NOT r.deleted AND a.settled IS NOT NULL;
