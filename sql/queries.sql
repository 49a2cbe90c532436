-- Named statements, loaded once by gateway.db.load_queries.

-- name: user_for_login
-- By name, before any tenant is known: through a function with its owner's rights (0019_row_security.sql).
SELECT username, password_hash, role, disabled, token_version, tenant_code FROM gateway_user_for_login($1);

-- name: user_for_token
-- The request's user, read by gateway_principal (0019_row_security.sql), which also sets the user's tenant for
-- the row security of what the request does next: the permissions of the user's role when it is one of its
-- tenant's own (NULL for a built-in role, which gateway/permissions.py resolves in memory), so that the check
-- needs no round trip of its own; and whether $2, the token's jti, was revoked with its refresh family
-- (revokeToken): such a token is refused before it expires.
SELECT username, role, disabled, token_version, tenant_id, tenant_code, tokens_valid_after_epoch,
       role_permissions, access_revoked
FROM gateway_principal($1, $2);

-- name: tenant_add
-- A bare tenant: no chart, no defaults (the tests' arranging; `gateway tenant add` uses tenant_create).
INSERT INTO tenant (code, name) VALUES ($1, $2) RETURNING id;

-- name: tenant_create
INSERT INTO tenant (code, name, base_currency) VALUES ($1, $2, $3) RETURNING id;

-- name: tenant_by_code
SELECT id, code, name, base_currency, chart FROM tenant WHERE code = $1;

-- name: tenant_all
SELECT id, code, name, base_currency, chart FROM tenant ORDER BY code;

-- name: tenant_list
SELECT t.code, t.name, t.base_currency, t.locked_until, t.rate_limit, t.user_rate_limit, count(u.id) AS users
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

-- Posting (gateway/posting.py). $1 is the tenant, $2 the form, $3 the vouchers' ids.

-- name: voucher_unpost
-- Removes the vouchers' postings: ledger entries, stock movements and allocations, in one statement (data-
-- modifying CTEs) instead of one round trip per table. Rows go by their ctid, found through the primary key
-- key by key (a lateral subquery the planner cannot flatten, OFFSET 0); a row deleted here is never updated
-- elsewhere (lines and postings are only inserted and deleted, under the lock of their voucher's row), so the
-- ctid cannot go stale.
WITH g AS (DELETE FROM gl_entry WHERE ctid = ANY(ARRAY(
               SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
               (SELECT ctid FROM gl_entry WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id OFFSET 0) r))),
s AS (DELETE FROM stock_move WHERE ctid = ANY(ARRAY(
          SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
          (SELECT ctid FROM stock_move WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id OFFSET 0) r)))
DELETE FROM voucher_allocation WHERE ctid = ANY(ARRAY(
    SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
    (SELECT ctid FROM voucher_allocation WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id
     OFFSET 0) r));

-- name: voucher_unpost_with_lines
-- voucher_unpost, with the vouchers' lines.
WITH d AS (DELETE FROM voucher_line WHERE ctid = ANY(ARRAY(
               SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
               (SELECT ctid FROM voucher_line WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id
                OFFSET 0) r))),
g AS (DELETE FROM gl_entry WHERE ctid = ANY(ARRAY(
          SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
          (SELECT ctid FROM gl_entry WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id OFFSET 0) r))),
s AS (DELETE FROM stock_move WHERE ctid = ANY(ARRAY(
          SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
          (SELECT ctid FROM stock_move WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id OFFSET 0) r)))
DELETE FROM voucher_allocation WHERE ctid = ANY(ARRAY(
    SELECT r.ctid FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
    (SELECT ctid FROM voucher_allocation WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id
     OFFSET 0) r));

-- name: voucher_write_settings
-- Settings for the writing transaction (two commands, sent without parameters). Parameters become constants of
-- each plan, so the planner knows how many vouchers and lines a statement handles instead of assuming a handful
-- (a cached generic plan would join them in nested loops); custom planning costs far less than such a loop over
-- a batch of 1,000 lines. Joins are made in the order written: vouchers to their lines (hash or merge join), then
-- each line to its item and unit conversion by primary key. Otherwise a guess about a never-analysed table (say
-- that few items are stock tracked) could put the item scan first and then join every line to every voucher of
-- the batch.
SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL join_collapse_limit = 1;

-- Cost of sales (gateway/costing.py). $1 is the tenant.

-- name: costing_stored_moves
-- The stored movements of the vouchers $3 (of form $2), key by key through the primary key: where they stand.
SELECT voucher_id, item_code, move_date, day_order, form, move_no
FROM (SELECT r.* FROM unnest($3::text[]) AS k(voucher_id) CROSS JOIN LATERAL
      (SELECT * FROM stock_move WHERE tenant_id = $1 AND form = $2 AND voucher_id = k.voucher_id OFFSET 0) r) s;

-- name: costing_lock_items
-- The items ($2) locked for costing, in a fixed order so that two writers cannot deadlock on them: two
-- transactions costing one item's movements must not interleave (each would value from a state without the
-- other's movements). One key of 64 bits per tenant and item (a hash; two sharing a key only wait for each other).
SELECT pg_advisory_xact_lock(hashtextextended('stock_move ' || $1::integer || ' ' || k.item, 0))
FROM (SELECT item FROM unnest($2::text[]) AS u(item) ORDER BY 1 OFFSET 0) k;

-- name: costing_moves_from
-- Each item's ($2) movements from its start position ($3 ... $7) on, in costing order, through stock_move_order.
SELECT m.ctid, m.form, m.voucher_id, m.move_no, m.move_date, m.day_order, m.item_code, m.site_code, m.qty_in,
       m.qty_out, m.value_in, m.line_no, m.basis, m.counter, m.ref_voucher_id, m.ref_line, m.job_code,
       m.dept_code, m.cost, m.writeoff, m.qty_after, m.value_after
FROM unnest($2::text[], $3::date[], $4::integer[], $5::text[], $6::text[], $7::integer[])
     AS k(item_code, move_date, day_order, form, voucher_id, move_no)
CROSS JOIN LATERAL (SELECT ctid, * FROM stock_move s WHERE s.tenant_id = $1 AND s.item_code = k.item_code
                    AND (s.move_date, s.day_order, s.form, s.voucher_id, s.move_no)
                        >= (k.move_date, k.day_order, k.form, k.voucher_id, k.move_no)
                    OFFSET 0) m
ORDER BY m.item_code, m.move_date, m.day_order, m.form, m.voucher_id, m.move_no;

-- name: costing_state_before
-- Per item and site ($2, $3), the running state of the last movement before a position ($4 ... $8), through
-- stock_move_site_order: the state the pass starts from.
SELECT k.item_code, k.site_code, s.qty_after, s.value_after
FROM unnest($2::text[], $3::text[], $4::date[], $5::integer[], $6::text[], $7::text[], $8::integer[])
     AS k(item_code, site_code, move_date, day_order, form, voucher_id, move_no)
CROSS JOIN LATERAL (SELECT qty_after, value_after FROM stock_move s
                    WHERE s.tenant_id = $1 AND s.item_code = k.item_code AND s.site_code = k.site_code
                      AND (s.move_date, s.day_order, s.form, s.voucher_id, s.move_no)
                          < (k.move_date, k.day_order, k.form, k.voucher_id, k.move_no)
                    ORDER BY s.move_date DESC, s.day_order DESC, s.form DESC, s.voucher_id DESC, s.move_no DESC
                    LIMIT 1) s;

-- name: costing_cited
-- The outflows ($2 form, $3 voucher, $4 line or NULL: the first of $5 item) that returns and transfers outside
-- the pass cite, by primary key: their quantity and cost.
SELECT k.form, k.voucher_id, k.line_no, k.item_code, s.qty_out, s.cost
FROM unnest($2::text[], $3::text[], $4::integer[], $5::text[]) AS k(form, voucher_id, line_no, item_code)
CROSS JOIN LATERAL (SELECT qty_out, cost FROM stock_move s
                    WHERE s.tenant_id = $1 AND s.form = k.form AND s.voucher_id = k.voucher_id
                      AND s.item_code = k.item_code AND s.qty_out <> 0
                      AND (k.line_no IS NULL OR s.line_no = k.line_no)
                    ORDER BY s.move_no LIMIT 1) s;

-- name: costing_settings
-- The tenant's negative-stock setting, its base currency's decimal places and its accounts of the roles $2.
SELECT t.negative_stock,
       COALESCE((SELECT c.decimal_places FROM currency c WHERE c.tenant_id = t.id
                 AND c.currency_code = t.base_currency), 2) AS places,
       (SELECT COALESCE(jsonb_object_agg(pa.role, pa.account_code), '{}') FROM posting_account pa
        WHERE pa.tenant_id = t.id AND pa.role = ANY($2::text[])) AS accounts
FROM tenant t WHERE t.id = $1;

-- name: costing_update_moves
-- Costs and running states written back to the rows the pass read ($2: their ctids), amounts as text, read
-- exactly by PostgreSQL; the rows written are returned. By ctid (a TID scan of `ctid = ANY`, joined to the
-- values after): joined on the primary key or on ctid alone, the planner, guessing at a never-analysed table,
-- read all the tenant's movements and hashed them. The ctids cannot go stale: a movement is updated or removed
-- only under its item's lock (costing_lock_items).
UPDATE stock_move s SET cost = u.cost::numeric, writeoff = u.writeoff::numeric, qty_after = u.qty_after::numeric,
                        value_after = u.value_after::numeric
FROM unnest($2::tid[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(row, cost, writeoff, qty_after,
                                                                           value_after)
WHERE s.ctid = ANY($2::tid[]) AND s.ctid = u.row AND s.tenant_id = $1
RETURNING u.row;

-- name: costing_replace_entries
-- The cost entries of the movements $2 ... $4 replaced by $5 ...: the old ones found through the primary key
-- (ctid, as voucher_unpost does) and deleted before the new ones go in (the one-time filter on `gone` runs the
-- delete to its end first). A movement's cost entries are entry_no move_no x 4 - 3 .. move_no x 4
-- (gateway/costing.py _SLOTS).
WITH gone AS (
    DELETE FROM gl_entry WHERE ctid = ANY(ARRAY(
        SELECT r.ctid FROM unnest($2::text[], $3::text[], $4::integer[]) AS k(form, voucher_id, move_no)
        CROSS JOIN LATERAL (SELECT ctid FROM gl_entry WHERE tenant_id = $1 AND form = k.form
                            AND voucher_id = k.voucher_id AND source = 'cost'
                            AND entry_no BETWEEN k.move_no * 4 - 3 AND k.move_no * 4
                            OFFSET 0) r))
    RETURNING 1)
INSERT INTO gl_entry (tenant_id, form, voucher_id, source, entry_no, entry_date, account_code, debit, credit,
                      job_code, dept_code)
SELECT $1, u.form, u.voucher_id, 'cost', u.entry_no, u.entry_date, u.account_code, u.debit::numeric,
       u.credit::numeric, u.job_code, u.dept_code
FROM unnest($5::text[], $6::text[], $7::integer[], $8::date[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[]) AS u(form, voucher_id, entry_no, entry_date, account_code, debit, credit, job_code, dept_code)
WHERE (SELECT count(*) FROM gone) >= 0;

-- name: costing_tenant_items
-- Every item the tenant has moved (an administrator's command: it reads all the tenant's movements).
SELECT DISTINCT item_code FROM stock_move WHERE tenant_id = $1 ORDER BY 1;

-- name: costing_set_negative_stock
-- Sets the negative-stock setting ($2) of the tenant with code $1.
UPDATE tenant SET negative_stock = $2 WHERE code = $1 RETURNING id;

-- name: costing_stock_value
-- The total stock value of tenant $1 at $2: what every movement up to then added (its cost in) and took (its
-- cost out), less what it wrote off.
SELECT COALESCE(sum(CASE WHEN qty_out <> 0 THEN -COALESCE(cost, 0) ELSE COALESCE(cost, 0) END
                    - COALESCE(writeoff, 0)), 0)
FROM stock_move WHERE tenant_id = $1 AND move_date <= $2;

-- Reports (gateway/reports.py). $1 is the tenant. The report queries keep one plan shape whatever the statistics
-- say (a new tenant's reports run on tables never analysed, beside other tenants' rows;
-- tests/test_report_plans.py). The tenant's postings are summed first and the master rows (account, customer,
-- item) looked up once per summed row by primary key, in lateral subqueries the planner cannot flatten (OFFSET
-- 0): joined to the postings directly, the master table guessed small was planned as a nested loop filtering
-- all the tenant's accounts for every posting. A voucher looked up from a posting or an allocation names its id
-- and tenant only, its form checked outside the subquery (as gateway/posting.py STORED_VOUCHERS does): with the
-- form inside, voucher_by_date (tenant_id, form, ...) matches as many columns as voucher_by_key, and without
-- statistics the planner may take it and read every voucher of the tenant's form for each posting (an account
-- ledger of 3,000 postings took 0.45-0.6 s instead of 20 ms until ANALYZE; bench/report_plans.py).

-- name: report_trial_balance
-- By account: the balance before $2, debits and credits from $2 to $3, the balance at $3 (debit positive).
SELECT g.account_code AS "AccountCode", a.account_name AS "AccountName",
       g.opening AS "Opening", g.debit AS "Debit", g.credit AS "Credit", g.closing AS "Closing"
FROM (SELECT account_code,
             COALESCE(sum(debit - credit) FILTER (WHERE entry_date < $2), 0) AS opening,
             COALESCE(sum(debit) FILTER (WHERE entry_date >= $2), 0) AS debit,
             COALESCE(sum(credit) FILTER (WHERE entry_date >= $2), 0) AS credit,
             COALESCE(sum(debit - credit), 0) AS closing
      FROM gl_entry WHERE tenant_id = $1 AND entry_date <= $3
      GROUP BY account_code) g
LEFT JOIN LATERAL (SELECT a.account_name FROM account a
                   WHERE a.tenant_id = $1 AND a.account_code = g.account_code OFFSET 0) a ON true
ORDER BY g.account_code;

-- name: report_account_opening
-- The balance of account $2 before $3 (debit positive).
SELECT COALESCE(sum(debit - credit), 0) FROM gl_entry
WHERE tenant_id = $1 AND account_code = $2 AND entry_date < $3;

-- name: report_account_ledger
-- The entries of account $2 from $3 to $4 with the running balance (debit positive) from the opening balance
-- $5 (report_account_opening, which the report answers beside them).
SELECT g.entry_date AS "EntryDate", g.form AS "Form", g.voucher_id AS "VoucherId",
       v.voucher_number AS "VoucherNumber", v.description AS "Description", g.partner_code AS "PartnerCode",
       g.debit AS "Debit", g.credit AS "Credit",
       $5::numeric
         + sum(g.debit - g.credit) OVER (ORDER BY g.entry_date, g.form, g.voucher_id, g.entry_no) AS "Balance"
FROM gl_entry g
LEFT JOIN LATERAL (SELECT v.form, v.voucher_number, v.description FROM voucher v
                   WHERE v.voucher_id = g.voucher_id AND v.tenant_id = $1 OFFSET 0) v ON v.form = g.form
WHERE g.tenant_id = $1 AND g.account_code = $2 AND g.entry_date BETWEEN $3 AND $4
ORDER BY g.entry_date, g.form, g.voucher_id, g.entry_no;

-- Stock on hand at $2 by item and site, with the quantity before $3 and what came in and went out from $3 on, and
-- the moves of the period shown when $4 even where nothing is left. Two fixed texts, all items and item $5,
-- rather than "$5 IS NULL OR item_code = $5", so that a cached generic plan for one item still reads an index
-- that leads with the tenant and the item (stock_move_order).

-- name: report_stock_all
-- Stock of every item.
WITH moves AS (
    SELECT item_code, site_code,
           COALESCE(sum(qty_in - qty_out) FILTER (WHERE move_date < $3), 0) AS opening,
           COALESCE(sum(qty_in) FILTER (WHERE move_date >= $3), 0) AS qty_in,
           COALESCE(sum(qty_out) FILTER (WHERE move_date >= $3), 0) AS qty_out,
           sum(qty_in - qty_out) AS quantity,
           -- The value at the date, on the basis the inventory account is posted on (gateway/costing.py):
           -- what each movement up to then added and took, at moving average cost (as costing_stock_value).
           sum(CASE WHEN qty_out <> 0 THEN -COALESCE(cost, 0) ELSE COALESCE(cost, 0) END
               - COALESCE(writeoff, 0)) AS value
    FROM stock_move WHERE tenant_id = $1 AND move_date <= $2
    GROUP BY item_code, site_code
)
SELECT m.item_code AS "ItemCode", i.item_name AS "ItemName", i.uom AS "Uom", m.site_code AS "SiteCode",
       m.opening AS "OpeningQuantity", m.qty_in AS "QuantityIn", m.qty_out AS "QuantityOut",
       m.quantity AS "Quantity", round(m.value / NULLIF(m.quantity, 0), 4) AS "UnitCost", m.value AS "Value"
FROM moves m
LEFT JOIN LATERAL (SELECT i.item_name, i.uom FROM item i
                   WHERE i.tenant_id = $1 AND i.item_code = m.item_code OFFSET 0) i ON true
WHERE m.quantity <> 0 OR m.value <> 0 OR ($4 AND (m.qty_in <> 0 OR m.qty_out <> 0))
ORDER BY m.item_code, m.site_code;

-- name: report_stock_item
-- Stock of item $5: report_stock_all with the item in the filter.
WITH moves AS (
    SELECT item_code, site_code,
           COALESCE(sum(qty_in - qty_out) FILTER (WHERE move_date < $3), 0) AS opening,
           COALESCE(sum(qty_in) FILTER (WHERE move_date >= $3), 0) AS qty_in,
           COALESCE(sum(qty_out) FILTER (WHERE move_date >= $3), 0) AS qty_out,
           sum(qty_in - qty_out) AS quantity,
           -- The value at the date, on the basis the inventory account is posted on (gateway/costing.py):
           -- what each movement up to then added and took, at moving average cost (as costing_stock_value).
           sum(CASE WHEN qty_out <> 0 THEN -COALESCE(cost, 0) ELSE COALESCE(cost, 0) END
               - COALESCE(writeoff, 0)) AS value
    FROM stock_move WHERE tenant_id = $1 AND move_date <= $2 AND item_code = $5
    GROUP BY item_code, site_code
)
SELECT m.item_code AS "ItemCode", i.item_name AS "ItemName", i.uom AS "Uom", m.site_code AS "SiteCode",
       m.opening AS "OpeningQuantity", m.qty_in AS "QuantityIn", m.qty_out AS "QuantityOut",
       m.quantity AS "Quantity", round(m.value / NULLIF(m.quantity, 0), 4) AS "UnitCost", m.value AS "Value"
FROM moves m
LEFT JOIN LATERAL (SELECT i.item_name, i.uom FROM item i
                   WHERE i.tenant_id = $1 AND i.item_code = m.item_code OFFSET 0) i ON true
WHERE m.quantity <> 0 OR m.value <> 0 OR ($4 AND (m.qty_in <> 0 OR m.qty_out <> 0))
ORDER BY m.item_code, m.site_code;

-- name: report_posting_account
-- The tenant's own account of posting role $2, if it set one.
SELECT account_code FROM posting_account WHERE tenant_id = $1 AND role = $2;

-- Customer balances on account $2: the balance before $3, debits and credits from $3 to $4, the balance at $4
-- (debit positive), per partner with a balance or a movement in the period. Two fixed texts, as for the stock.

-- name: report_balance_all
-- The balances of every customer.
SELECT g.partner_code AS "CustomerCode", c.customer_name AS "CustomerName",
       g.opening AS "Opening", g.debit AS "Debit", g.credit AS "Credit", g.closing AS "Closing"
FROM (SELECT partner_code,
             COALESCE(sum(debit - credit) FILTER (WHERE entry_date < $3), 0) AS opening,
             COALESCE(sum(debit) FILTER (WHERE entry_date >= $3), 0) AS debit,
             COALESCE(sum(credit) FILTER (WHERE entry_date >= $3), 0) AS credit,
             sum(debit - credit) AS closing
      FROM gl_entry
      WHERE tenant_id = $1 AND account_code = $2 AND entry_date <= $4 AND partner_code IS NOT NULL
      GROUP BY partner_code
      HAVING sum(debit - credit) <> 0 OR bool_or(entry_date >= $3 AND (debit <> 0 OR credit <> 0))) g
LEFT JOIN LATERAL (SELECT c.customer_name FROM customer c
                   WHERE c.tenant_id = $1 AND c.customer_code = g.partner_code OFFSET 0) c ON true
ORDER BY g.partner_code;

-- name: report_balance_one
-- The balance of customer $5: report_balance_all with the partner in the filter.
SELECT g.partner_code AS "CustomerCode", c.customer_name AS "CustomerName",
       g.opening AS "Opening", g.debit AS "Debit", g.credit AS "Credit", g.closing AS "Closing"
FROM (SELECT partner_code,
             COALESCE(sum(debit - credit) FILTER (WHERE entry_date < $3), 0) AS opening,
             COALESCE(sum(debit) FILTER (WHERE entry_date >= $3), 0) AS debit,
             COALESCE(sum(credit) FILTER (WHERE entry_date >= $3), 0) AS credit,
             sum(debit - credit) AS closing
      FROM gl_entry
      WHERE tenant_id = $1 AND account_code = $2 AND entry_date <= $4 AND partner_code IS NOT NULL
        AND partner_code = $5
      GROUP BY partner_code
      HAVING sum(debit - credit) <> 0 OR bool_or(entry_date >= $3 AND (debit <> 0 OR credit <> 0))) g
LEFT JOIN LATERAL (SELECT c.customer_name FROM customer c
                   WHERE c.tenant_id = $1 AND c.customer_code = g.partner_code OFFSET 0) c ON true
ORDER BY g.partner_code;

-- name: report_open_items
-- The open items of one side of the books at $3: per partner the open invoices of form $2 with their aging, and
-- the unapplied items; $4 to list paid invoices too.
-- $5 is the control account's role and $6 its default account, $7 the sign that makes what is owed positive (1
-- receivable, -1 payable). In the base currency an invoice is open for what it posted to the control account
-- less what settlements took off it at book value; a partner's other entries on the account are unapplied
-- items (payments not allocated, returns citing no invoice, journal lines), each net of what it settled. A
-- settlement counts when both its voucher and its invoice are dated up to the date, on both sides, so that per
-- partner the open items plus the unapplied items equal the account's balance at any date
-- (gateway/settlement.py). The entries on the account are read once, through its index, and summed per voucher:
-- the invoices' amounts come from there too. The driver sends (and stores) 0001-01-01 and 9999-12-31 as
-- -infinity and infinity, which compare as those days do but cannot be subtracted: the days between them are
-- counted from the calendar's ends instead.
WITH control AS MATERIALIZED (
    SELECT COALESCE((SELECT account_code FROM posting_account WHERE tenant_id = $1 AND role = $5), $6) AS account
),
entries AS MATERIALIZED (
    SELECT g.partner_code, g.form, g.voucher_id, min(g.entry_date) AS entry_date,
           $7::integer * sum(g.debit - g.credit) AS posted
    FROM gl_entry g
    WHERE g.tenant_id = $1 AND g.account_code = (SELECT account FROM control) AND g.entry_date <= $3
    GROUP BY g.partner_code, g.form, g.voucher_id
),
invoice_rows AS MATERIALIZED (
    SELECT v.form, v.voucher_id, v.voucher_date, v.partner_code, v.currency, v.total_amount, v.exchange_rate,
           COALESCE((v.document->>'DueDate')::date, v.voucher_date) AS due_date
    FROM voucher v
    WHERE v.tenant_id = $1 AND v.form = $2 AND NOT v.deleted AND v.voucher_date <= $3
),
-- What live vouchers dated up to the date settle of each invoice; each settling voucher found by its id and
-- tenant, its form checked outside (see above).
settled AS MATERIALIZED (
    SELECT i.voucher_id AS invoice_id, i.partner_code, a.form, a.voucher_id,
           COALESCE(a.invoice_amount, a.amount) AS paid,
           COALESCE(a.base_amount, COALESCE(a.invoice_amount, a.amount) * i.exchange_rate) AS base
    FROM invoice_rows i
    CROSS JOIN LATERAL (SELECT a.form, a.voucher_id, a.amount, a.invoice_amount, a.base_amount
                        FROM voucher_allocation a
                        WHERE a.tenant_id = $1 AND a.invoice_form = i.form AND a.invoice_id = i.voucher_id
                        OFFSET 0) a
    CROSS JOIN LATERAL (SELECT p.form, p.deleted, p.voucher_date FROM voucher p
                        WHERE p.voucher_id = a.voucher_id AND p.tenant_id = $1 OFFSET 0) p
    WHERE p.form = a.form AND NOT p.deleted AND p.voucher_date <= $3
),
items AS (
    SELECT i.*, COALESCE(s.paid, 0) AS paid, COALESCE(e.posted, 0) - COALESCE(s.base, 0) AS due,
           i.total_amount - COALESCE(s.paid, 0) AS outstanding,
           (CASE WHEN isfinite($3::date) THEN $3::date WHEN $3::date > date '2000-01-01' THEN date '9999-12-31'
                 ELSE date '0001-01-01' END)
             - (CASE WHEN isfinite(due_date) THEN due_date WHEN due_date > date '2000-01-01' THEN date '9999-12-31'
                     ELSE date '0001-01-01' END) AS days_overdue,
           CASE WHEN i.total_amount - COALESCE(s.paid, 0) <= 0 THEN 'paid'
                WHEN i.due_date < $3 THEN 'overdue'
                WHEN s.paid > 0 THEN 'partially_paid'
                ELSE 'open' END AS status
    FROM invoice_rows i
    LEFT JOIN (SELECT invoice_id, sum(paid) AS paid, sum(base) AS base FROM settled GROUP BY invoice_id) s
           ON s.invoice_id = i.voucher_id
    LEFT JOIN entries e ON e.form = i.form AND e.voucher_id = i.voucher_id
),
open AS (
    SELECT partner_code,
           sum(due) FILTER (WHERE days_overdue <= 0) AS current,
           sum(due) FILTER (WHERE days_overdue BETWEEN 1 AND 30) AS days1to30,
           sum(due) FILTER (WHERE days_overdue BETWEEN 31 AND 60) AS days31to60,
           sum(due) FILTER (WHERE days_overdue BETWEEN 61 AND 90) AS days61to90,
           sum(due) FILTER (WHERE days_overdue > 90) AS over90,
           sum(due) AS total,
           jsonb_agg(jsonb_build_object(
               'VoucherId', voucher_id, 'VoucherDate', voucher_date, 'DueDate', due_date, 'Currency', currency,
               'TotalAmount', total_amount, 'Paid', paid, 'Outstanding', outstanding, 'BaseOutstanding', due,
               'DaysOverdue', GREATEST(days_overdue, 0), 'Status', status) ORDER BY voucher_date, voucher_id)
             AS invoices
    FROM items
    WHERE outstanding > 0 OR due <> 0 OR $4
    GROUP BY partner_code
),
-- Every other voucher with entries on the account or settling an invoice: its entries plus what it settled.
unapplied AS (
    SELECT COALESCE(e.partner_code, s.partner_code) AS partner_code, COALESCE(e.form, s.form) AS form,
           COALESCE(e.voucher_id, s.voucher_id) AS voucher_id, e.entry_date,
           COALESCE(e.posted, 0) + COALESCE(s.base, 0) AS amount
    FROM (SELECT * FROM entries WHERE form <> $2) e
    FULL JOIN (SELECT partner_code, form, voucher_id, sum(base) AS base FROM settled
               GROUP BY partner_code, form, voucher_id) s
           ON s.partner_code = e.partner_code AND s.form = e.form AND s.voucher_id = e.voucher_id
),
credits AS (
    SELECT partner_code, sum(amount) AS amount,
           jsonb_agg(jsonb_build_object('Form', form, 'VoucherId', voucher_id, 'VoucherDate', entry_date,
                                        'Amount', amount) ORDER BY entry_date, form, voucher_id) AS items
    FROM unapplied
    WHERE amount <> 0
    GROUP BY partner_code
)
SELECT COALESCE(o.partner_code, c.partner_code) AS "PartnerCode",
       COALESCE(o.current, 0) AS "Current", COALESCE(o.days1to30, 0) AS "Days1To30",
       COALESCE(o.days31to60, 0) AS "Days31To60", COALESCE(o.days61to90, 0) AS "Days61To90",
       COALESCE(o.over90, 0) AS "Over90", COALESCE(o.total, 0) AS "Total",
       COALESCE(o.invoices, '[]') AS "Invoices",
       COALESCE(c.amount, 0) AS "Unapplied", COALESCE(c.items, '[]') AS "UnappliedItems",
       COALESCE(o.total, 0) + COALESCE(c.amount, 0) AS "Balance"
FROM open o FULL JOIN credits c ON c.partner_code = o.partner_code
ORDER BY 1;

-- Sales net of returns from $2 to $3, by month, customer or item: three fixed texts that differ only in the key
-- and, by item, the unit column. Quantities in each item's base unit, by the rule stock moves by
-- (gateway/posting.py): a line in its item's base unit, or of an item without one, counts as sent; a line in
-- another unit, times the coefficient of the item's conversion for it (the last one known: a sale stays counted
-- after its conversion is deleted). Amounts in the base currency, each line rounded to its decimals as the
-- ledger posts it. The lines are summed per key, item and unit first; then each item and unit of the sums is
-- looked up once, by primary key (OFFSET 0, see above), for its factor to the base unit.

-- name: report_sales_summary
-- Grouped by $4: 'period' (month, yyyy-MM), 'customer' or 'item'; by item also the unit its quantities are
-- in (the item's base unit, else the one unit its lines were sold in; the caller drops it for other groups).
WITH s AS MATERIALIZED (
    SELECT CASE $4::text WHEN 'period' THEN to_char(v.voucher_date, 'YYYY-MM') WHEN 'customer' THEN v.partner_code
                ELSE l.item_code END AS key, l.item_code, COALESCE(l.uom, '') AS uom,
           sum(sign * l.quantity) AS quantity,
           sum(sign * round((l.amount - COALESCE(l.discount, 0)) * v.exchange_rate, p.n)) AS net,
           sum(sign * round(COALESCE(l.tax_amount, 0) * v.exchange_rate, p.n)) AS tax,
           sum(sign * round(COALESCE(l.total_amount, 0) * v.exchange_rate, p.n)) AS total
    FROM (SELECT *, CASE WHEN form = 'setSaleReturn' THEN -1 ELSE 1 END AS sign FROM voucher
          WHERE tenant_id = $1 AND form IN ('setSaleInvoice', 'setSaleReturn') AND NOT deleted
            AND voucher_date BETWEEN $2 AND $3) v
    JOIN voucher_line l ON l.tenant_id = v.tenant_id AND l.form = v.form AND l.voucher_id = v.voucher_id
    CROSS JOIN (SELECT COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id
                                     AND c.currency_code = t.base_currency WHERE t.id = $1), 2) AS n) p
    GROUP BY 1, 2, 3
),
u AS MATERIALIZED (
    SELECT d.item_code, d.uom, NULLIF(i.uom, '') AS base,
           CASE WHEN NULLIF(i.uom, '') IS NULL OR d.uom IN ('', i.uom) THEN 1 ELSE c.coefficient END AS factor
    FROM (SELECT DISTINCT item_code, uom FROM s) d
    LEFT JOIN LATERAL (SELECT i.uom FROM item i WHERE i.tenant_id = $1 AND i.item_code = d.item_code OFFSET 0) i
      ON true
    LEFT JOIN LATERAL (SELECT c.coefficient FROM unit_conversion c
                       WHERE c.tenant_id = $1 AND c.item_code = d.item_code AND c.uom = d.uom OFFSET 0) c ON true
)
SELECT s.key AS "Key",
       COALESCE(max(u.base), CASE WHEN min(s.uom) = max(s.uom) THEN NULLIF(min(s.uom), '') END) AS "Uom",
       sum(s.quantity * u.factor) AS "Quantity",
       sum(s.net) AS "NetAmount", sum(s.tax) AS "TaxAmount", sum(s.total) AS "TotalAmount"
FROM s JOIN u ON u.item_code = s.item_code AND u.uom = s.uom
GROUP BY 1
ORDER BY 1;

-- name: reconciliation_ledger
-- Per posting role $2 (in that order): its account (the tenant's own, else the default $3) and its balance at
-- $4, one role per row. The balance sums the account's entries through gl_entry_account (tenant, account,
-- date), one lateral lookup per role that the planner cannot flatten (OFFSET 0), as the reports look up their
-- master rows.
SELECT r.ord, r.role, r.account_code, a.account_name, COALESCE(g.balance, 0) AS balance
FROM (SELECT k.ord, k.role, COALESCE(pa.account_code, k.fallback) AS account_code
      FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k(role, fallback, ord)
      LEFT JOIN LATERAL (SELECT pa.account_code FROM posting_account pa
                         WHERE pa.tenant_id = $1 AND pa.role = k.role OFFSET 0) pa ON true) r
LEFT JOIN LATERAL (SELECT a.account_name FROM account a
                   WHERE a.tenant_id = $1 AND a.account_code = r.account_code OFFSET 0) a ON true
CROSS JOIN LATERAL (SELECT sum(g.debit - g.credit) AS balance FROM gl_entry g
                    WHERE g.tenant_id = $1 AND g.account_code = r.account_code AND g.entry_date <= $4
                    OFFSET 0) g
ORDER BY r.ord;

-- Goods received not invoiced at $2 (gateway/grni.py), over the receipt lines: per stock-tracked line of the
-- live receipts dated up to $2, what it received (quantity, value in the base currency rounded to its decimals,
-- 2 for a base currency missing from the catalog) and what live purchase invoices dated up to $2 invoiced of it
-- (quantity, value relieved: the whole line's value when all of it is invoiced at once, else its share,
-- rounded; the invoices). The same lines in both statements below; the lines' tenant is compared as IS NOT
-- DISTINCT FROM, see above.

-- name: grni_open_receipts
-- getGoodsReceivedNotInvoiced: per supplier, the receipt lines not yet (wholly) invoiced and their open value.
SELECT partner_code AS "PartnerCode", sum(value - relieved) AS "Value",
       jsonb_agg(jsonb_build_object(
           'ReceiptId', voucher_id, 'VoucherDate', voucher_date, 'RefNumber', line_no, 'ItemCode', item_code,
           'Uom', uom, 'SiteCode', site_code, 'QuantityReceived', received, 'QuantityInvoiced', invoiced,
           'QuantityOpen', received - invoiced, 'Value', value, 'ValueInvoiced', relieved,
           'ValueOpen', value - relieved, 'Invoices', invoices) ORDER BY voucher_date, voucher_id, line_no)
         AS "Lines"
FROM (
SELECT v.partner_code, v.voucher_id, v.voucher_date, l.line_no, l.item_code, l.uom, l.site_code,
       l.quantity AS received,
       round(l.amount * v.exchange_rate,
             COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id
                       AND c.currency_code = t.base_currency WHERE t.id = $1), 2)) AS value,
       COALESCE(p.quantity, 0) AS invoiced, COALESCE(p.relieved, 0) AS relieved,
       COALESCE(p.invoices, '{}') AS invoices
FROM voucher v
CROSS JOIN LATERAL (SELECT * FROM voucher_line l WHERE l.voucher_id = v.voucher_id AND l.tenant_id IS NOT DISTINCT FROM $1
                    AND l.form = 'setReceipt' OFFSET 0) l
LEFT JOIN LATERAL (
    SELECT sum(pl.quantity) AS quantity,
           sum(round(CASE WHEN pl.quantity = l.quantity THEN l.amount
                          ELSE l.amount * pl.quantity / NULLIF(l.quantity, 0) END * v.exchange_rate,
                     COALESCE((SELECT c.decimal_places FROM tenant t JOIN currency c ON c.tenant_id = t.id
                               AND c.currency_code = t.base_currency WHERE t.id = $1), 2))) AS relieved,
           array_agg(DISTINCT pl.voucher_id) AS invoices
    FROM (SELECT pl.form, pl.voucher_id, pl.quantity FROM voucher_line pl WHERE pl.receipt_id = l.voucher_id
          AND pl.receipt_line = l.line_no AND pl.tenant_id IS NOT DISTINCT FROM $1 OFFSET 0) pl
    CROSS JOIN LATERAL (SELECT pv.form, pv.voucher_date FROM voucher pv
                        WHERE pv.voucher_id = pl.voucher_id AND pv.tenant_id = $1 OFFSET 0) pv
    WHERE pl.form = 'setPurchaseInvoice' AND pv.form = pl.form AND pv.voucher_date <= $2) p ON true
WHERE v.tenant_id = $1 AND v.form = 'setReceipt' AND NOT v.deleted AND v.voucher_date <= $2
  AND COALESCE((SELECT i.stock_tracked FROM item i WHERE i.tenant_id = l.tenant_id AND i.item_code = l.item_code
                AND NOT i.deleted OFFSET 0), 0) = 1
) r
WHERE received <> invoiced OR value <> relieved
GROUP BY partner_code
ORDER BY partner_code;

-- name: pull_stream_settings
-- Set for a streamed GetData read (gateway/query.py). Rows must flow from the first moment, never after a sort
-- of the whole answer: where an index gives the order (the key's always does) it is used, whatever the table's
-- statistics say. On a never-analysed table of a million customers PostgreSQL otherwise planned a sort of all
-- of them before the first row (2-3 s).
SET LOCAL enable_sort = off;

-- Migrations and connections (gateway/db.py).

-- name: migration_lock
-- The lock ($1, gateway/db.py _MIGRATION_LOCK) every process migrating this database takes first.
SELECT pg_advisory_lock($1);

-- name: migration_unlock
SELECT pg_advisory_unlock($1);

-- name: migration_table
-- The record of the migrations applied.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());

-- name: migration_versions
SELECT version FROM schema_migrations;

-- name: migration_applied
INSERT INTO schema_migrations (version, name) VALUES ($1, $2);

-- name: session_unlock_all
-- Releases every session advisory lock of the connection (what a request cut short left behind).
SELECT pg_advisory_unlock_all();

-- name: ready_ping
-- The readiness probe's round trip.
SELECT 1;

-- name: tenant_lock_table
-- The first run's demo tenant is created once, whichever process gets here first.
LOCK TABLE tenant IN EXCLUSIVE MODE;

-- Roles and permissions (gateway/permissions.py, `gateway role`) ----------------------------------------

-- name: role_list
-- A tenant's own roles with how many users hold each; every tenant's when $1 is NULL.
SELECT t.code AS tenant, r.name, r.permissions,
       (SELECT count(*) FROM app_user u WHERE u.tenant_id = r.tenant_id AND u.role = r.name) AS users
FROM tenant_role r JOIN tenant t ON t.id = r.tenant_id
WHERE $1::text IS NULL OR t.code = $1
ORDER BY t.code, r.name;

-- name: role_create
INSERT INTO tenant_role (tenant_id, name, permissions) VALUES ($1, $2, $3) RETURNING name;

-- name: role_lock
-- Taken before a role is deleted: a user being given the role (role_for_tenant) is committed first, and the
-- holders are then read after it.
SELECT name FROM tenant_role WHERE tenant_id = $1 AND name = $2 FOR UPDATE;

-- name: role_holders
SELECT username FROM app_user WHERE tenant_id = $1 AND role = $2 ORDER BY username;

-- name: role_delete
DELETE FROM tenant_role WHERE tenant_id = $1 AND name = $2 RETURNING name;

-- name: role_for_tenant
-- Keeps the role from being deleted until the user given it is committed.
SELECT name FROM tenant_role WHERE tenant_id = $1 AND name = $2 FOR KEY SHARE;

-- name: user_tenant
SELECT u.tenant_id, t.code AS tenant_code FROM app_user u JOIN tenant t ON t.id = u.tenant_id WHERE u.username = $1;

-- The audit log (gateway/audit.py) -----------------------------------------------------------------------

-- name: audit_insert
-- One event. The tenant is $1, else the tenant whose code is $2 (a token's claim), else none. Written with the
-- owner's rights: the event's tenant need not be the session's (0019_row_security.sql).
SELECT gateway_audit_insert($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: audit_insert_last
-- audit_insert as the request's last statement: the tenant it set for the session is cleared in the same round
-- trip, so the pool has nothing left to reset (gateway/db.py GatewayConnection).
SELECT gateway_audit_insert($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13),
       set_config('gateway.tenant_id', '', false);

-- name: audit_insert_user
-- An event about the user a request names ($1): recorded under the user's tenant, and with the name only when
-- it is a user's (a login's name may be a password typed in the wrong field).
SELECT gateway_audit_insert_user($1, $2, $3, $4, $5, $6, $7, $8);

-- name: audit_purge
-- At most $2 rows older than $1 days: a purge on the write path stays short (gateway/audit.py PURGE_BATCH).
DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE at < now() - make_interval(days => $1::integer) LIMIT $2);

-- name: audit_read
-- getAuditLog, newest first: a tenant's rows below id $7, filtered by kinds $2, user $3, form $4 and the time
-- range [$5, $6).
SELECT id, at, kind, username, endpoint, form, counts, idempotency_key, request_id, client_addr, duration_ms,
       status, detail
FROM audit_log
WHERE tenant_id = $1 AND id < $7
  AND ($2::text[] IS NULL OR kind = ANY($2::text[]))
  AND ($3::text IS NULL OR username = $3::text)
  AND ($4::text IS NULL OR lower(form) = lower($4::text))
  AND ($5::timestamptz IS NULL OR at >= $5::timestamptz)
  AND ($6::timestamptz IS NULL OR at < $6::timestamptz)
ORDER BY id DESC
LIMIT $8;

-- name: audit_read_since
-- getAuditLog with `since`: the rows after id $7, oldest first, filtered as audit_read. Ids are taken before
-- their rows commit, so a row younger than $9 seconds may yet be joined by one of a lower id: the page stops
-- before the first such row, and a follower that keeps its position misses none.
SELECT id, at, kind, username, endpoint, form, counts, idempotency_key, request_id, client_addr, duration_ms,
       status, detail
FROM audit_log
WHERE tenant_id = $1 AND id > $7
  AND id < coalesce((SELECT min(id) FROM audit_log
                     WHERE tenant_id = $1 AND id > $7 AND at > now() - make_interval(secs => $9::float8)),
                    9223372036854775807)
  AND ($2::text[] IS NULL OR kind = ANY($2::text[]))
  AND ($3::text IS NULL OR username = $3::text)
  AND ($4::text IS NULL OR lower(form) = lower($4::text))
  AND ($5::timestamptz IS NULL OR at >= $5::timestamptz)
  AND ($6::timestamptz IS NULL OR at < $6::timestamptz)
ORDER BY id
LIMIT $8;

-- Token life cycle: refresh tokens and revoked access tokens (gateway/tokens.py) ------------------------

-- name: refresh_token_start
-- A new family's first refresh token: $1 its SHA-256, for the user $2 at token version $3 (the version the
-- login saw, so a password change since ends it), alive $4 seconds; $5 and $6 the access token handed out
-- with it (jti, expiry). No row: the user is gone.
INSERT INTO refresh_token (token_hash, family, user_id, tenant_id, token_version, expires_at, access_jti,
                           access_expires)
SELECT $1, gen_random_uuid(), u.id, u.tenant_id, $3, now() + make_interval(secs => $4::float8), $5, $6
FROM app_user u WHERE u.username = $2
RETURNING expires_at;

-- name: refresh_token_take
-- The refresh token $1 (its SHA-256) with its user's state now, locked: of two requests presenting the same
-- token, the second waits and then reads it spent (the reuse that revokes its family).
SELECT r.family, r.used_at IS NOT NULL AS used, r.revoked_at IS NOT NULL AS revoked,
       r.expires_at <= now() AS expired, r.token_version AS issued_version, r.tenant_id = u.tenant_id AS same_tenant,
       u.username, u.role, u.disabled, u.token_version, t.code AS tenant_code
FROM refresh_token r JOIN app_user u ON u.id = r.user_id JOIN tenant t ON t.id = u.tenant_id
WHERE r.token_hash = $1
FOR UPDATE OF r;

-- name: refresh_token_rotate
-- Spends the refresh token $1 and adds its successor $2 to the family, alive $3 seconds; $4 and $5 the access
-- token handed out with it (jti, expiry).
WITH spent AS (
    UPDATE refresh_token SET used_at = now() WHERE token_hash = $1
    RETURNING family, user_id, tenant_id, token_version
)
INSERT INTO refresh_token (token_hash, family, user_id, tenant_id, token_version, expires_at, access_jti,
                           access_expires)
SELECT $2, family, user_id, tenant_id, token_version, now() + make_interval(secs => $3::float8), $4, $5 FROM spent
RETURNING expires_at;

-- name: refresh_token_revoke_family
-- Revokes every live refresh token of the family $1 and denies the access tokens handed out with them that
-- have not expired yet. Returns how many refresh tokens it revoked.
WITH revoked AS (
    UPDATE refresh_token SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL
    RETURNING access_jti, access_expires
), denied AS (
    INSERT INTO revoked_access (jti, expires_at)
    SELECT access_jti, access_expires FROM revoked WHERE access_expires > now()
    ON CONFLICT (jti) DO NOTHING
)
SELECT count(*) FROM revoked;

-- name: refresh_token_family_of
-- The family of the refresh token $1 (its SHA-256) when it is the user $2's.
SELECT r.family FROM refresh_token r JOIN app_user u ON u.id = r.user_id
WHERE r.token_hash = $1 AND u.username = $2;

-- name: refresh_token_revoke_user
-- Every live refresh family of the user $1, revoked with the access tokens handed out with them; returns the
-- number of families.
WITH revoked AS (
    UPDATE refresh_token r SET revoked_at = now()
    FROM app_user u
    WHERE u.username = $1 AND r.user_id = u.id AND r.revoked_at IS NULL
    RETURNING r.family, r.access_jti, r.access_expires
), denied AS (
    INSERT INTO revoked_access (jti, expires_at)
    SELECT access_jti, access_expires FROM revoked WHERE access_expires > now()
    ON CONFLICT (jti) DO NOTHING
)
SELECT count(DISTINCT family) FROM revoked;

-- name: access_token_revoke
-- Denies the access token $1 (jti) until it expires ($2).
INSERT INTO revoked_access (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING;

-- name: refresh_token_purge
-- Refresh tokens past their expiry, and denied access tokens past theirs, are worth nothing any more.
WITH gone AS (DELETE FROM refresh_token WHERE expires_at < now())
DELETE FROM revoked_access WHERE expires_at < now();

-- Rate limits per tenant and per user (gateway/ratelimit.py, `gateway tenant set --rate-limit`) ----------

-- name: rate_limit_lease
-- Leases units of the window starting at $3 (seconds since the epoch) of tenant $1's own count ($2 '') or of
-- its user $2's. The limit is the tenant's rate_limit (user_rate_limit for a user), else $4, the default; no
-- row when it is 0 (no limit) or there is no such tenant. First the $5 units this worker leased before in the
-- window and did not spend are given back; then a chunk (a $6-th of the limit, at least 1) is handed out, or
-- what remains of the limit when less. Returns the limit, the window's count and the units granted (0: the
-- window is spent). The row lock makes concurrent leases queue, so the count never passes the limit.
WITH setting AS (
    SELECT CASE WHEN $2::text = '' THEN coalesce(rate_limit, $4::integer)
                ELSE coalesce(user_rate_limit, $4::integer) END AS lim
    FROM tenant WHERE code = $1::text
)
INSERT INTO rate_limit_window AS w (tenant, username, window_start, lim, used, granted)
SELECT $1, $2, $3::bigint, lim, least(lim, greatest(1, lim / $6::integer)), least(lim, greatest(1, lim / $6))
FROM setting WHERE lim > 0
ON CONFLICT (tenant, username, window_start) DO UPDATE
SET lim = EXCLUDED.lim,
    used = greatest(w.used - $5::integer, 0)
           + greatest(0, least(EXCLUDED.granted, EXCLUDED.lim - greatest(w.used - $5, 0))),
    granted = greatest(0, least(EXCLUDED.granted, EXCLUDED.lim - greatest(w.used - $5, 0)))
RETURNING lim, used, granted;

-- name: rate_limit_purge
-- Windows that started before $1 (seconds since the epoch) have passed: their counts are worth nothing.
DELETE FROM rate_limit_window WHERE window_start < $1;

-- name: rate_limit_set
-- Sets tenant $1's limits where $4 and $5 say so: $2 for the tenant, $3 for each of its users (NULL: the
-- default, 0: no limit).
UPDATE tenant SET rate_limit = CASE WHEN $4::boolean THEN $2::integer ELSE rate_limit END,
                  user_rate_limit = CASE WHEN $5::boolean THEN $3::integer ELSE user_rate_limit END
WHERE code = $1
RETURNING id;

-- --- metrics (gateway/metrics.py) ---------------------------------------------------------------------------

-- name: metrics_change_feed
-- At a scrape: the last change sequence number handed out (a sequence: no row security between it and the
-- count; a rolled-back write uses numbers too), and the age of the oldest transaction holding a tenant's write
-- gate (0: none), which change-feed pulls wait for (feed_cutoff). pg_locks and pg_stat_activity are in memory,
-- bounded by the server's connections; pg_stat_activity shows the start of the gateway role's own sessions.
SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM change_seq)::float8 AS sequence,
       (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(a.xact_start)), 0)::float8
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.classid = 1450738502 AND l.objsubid = 2 AND l.granted) AS held_back;


-- Admin page (gateway/admin.py) ------------------------------------------------------------------------------

-- name: admin_tenant
-- Tenant $1 as its admin sees it.
SELECT code, name, base_currency, chart, locked_until, negative_stock, created_at FROM tenant WHERE id = $1;

-- name: admin_users
-- The first $2 users of tenant $1 by name, each with its last login (audit_log_last_login: one probe a user).
SELECT u.username, u.role, u.disabled, u.created_at,
       (SELECT max(a.at) FROM audit_log a
        WHERE a.tenant_id = u.tenant_id AND a.username = u.username AND a.kind = 'login') AS last_login
FROM app_user u
WHERE u.tenant_id = $1
ORDER BY u.username
LIMIT $2;

-- name: admin_user_count
SELECT count(*) FROM app_user WHERE tenant_id = $1;

-- name: admin_minutes
-- Tenant $1's write requests in each of the last $2 minutes (the current one included), oldest first: how
-- many, the records they carried (the answers' counts), and how many did not succeed (a code other than 200,
-- or none: the client went away). Reads only the window's rows (audit_log_tenant_at).
WITH window_start AS (
    SELECT date_trunc('minute', now()) - make_interval(mins => $2::integer - 1) AS t
), per_minute AS (
    SELECT date_trunc('minute', a.at) AS minute, count(*) AS requests,
           sum(coalesce((a.counts->>'inserted')::bigint, 0) + coalesce((a.counts->>'updated')::bigint, 0)
               + coalesce((a.counts->>'unchanged')::bigint, 0) + coalesce((a.counts->>'deleted')::bigint, 0)
               + coalesce((a.counts->>'failed')::bigint, 0)) AS records,
           count(*) FILTER (WHERE a.status IS DISTINCT FROM 200) AS errors
    FROM audit_log a
    WHERE a.tenant_id = $1 AND a.kind = 'write' AND a.at >= (SELECT t FROM window_start)
    GROUP BY 1
)
SELECT m.minute, coalesce(p.requests, 0) AS requests, coalesce(p.records, 0)::bigint AS records,
       coalesce(p.errors, 0) AS errors
FROM window_start w
CROSS JOIN generate_series(w.t, date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN per_minute p ON p.minute = m.minute
ORDER BY m.minute;

-- name: admin_feed_heads
-- The latest change of tenant $1 in each feed of $2 (change_log_pull, read backwards: one probe a feed); feeds
-- never written are left out.
SELECT f.tbl, l.logged_at, jsonb_array_length(l.keys) AS keys
FROM unnest($2::text[]) AS f(tbl)
CROSS JOIN LATERAL (
    SELECT c.logged_at, c.keys FROM change_log c
    WHERE c.tenant_id = $1 AND c.tbl = f.tbl
    ORDER BY c.xid DESC, c.id DESC LIMIT 1
) AS l
ORDER BY l.logged_at DESC;

-- name: admin_delivery_counts
-- Tenant $1's last $2 webhook deliveries by state: delivered, waiting for their first attempt, failing (tried,
-- to be retried), dead (given up).
SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,
       count(*) FILTER (WHERE status = 'pending' AND attempts = 0) AS pending,
       count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS failing,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       count(*) AS total
FROM (SELECT status, attempts FROM webhook_delivery WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2) AS recent;

-- Row-level security (0019_row_security.sql, gateway/db.py) ------------------------------------------------

-- name: tenant_enter_user
-- Sets the tenant of the user $1 for the session (none for nobody); returns it.
SELECT gateway_enter_user_tenant($1);

-- name: tenant_enter_refresh
-- Sets the tenant of the refresh token whose SHA-256 is $1 for the session (none for an unknown token).
SELECT gateway_enter_refresh_tenant($1);

-- name: tenant_set_local
-- Sets the tenant $1 for the current transaction only.
SELECT set_config('gateway.tenant_id', $1::integer::text, true);

-- name: tenant_reset
-- The pool's reset of a connection a request set its tenant on: no tenant, until the next sets its own.
RESET gateway.tenant_id;

-- name: row_security_role
-- Whether the connected role is held to row security: a superuser or BYPASSRLS role is not, nor (through its
-- maintenance policy) the owner of the tables.
SELECT r.rolname, r.rolsuper, r.rolbypassrls, pg_has_role(current_user, c.relowner, 'USAGE') AS owner
FROM pg_roles r, pg_class c
WHERE r.rolname = current_user AND c.oid = 'app_user'::regclass;

-- --- webhooks (gateway/webhooks.py, gateway/webhook_worker.py) ---------------------------------------------

-- name: webhook_add
-- A subscription of tenant $1: url $2, forms $3, secrets $4 (the new one).
INSERT INTO webhook_subscription (tenant_id, url, forms, secrets) VALUES ($1, $2, $3, $4) RETURNING id;

-- name: webhook_list
-- The subscriptions of tenant $1 (NULL: every tenant's), oldest first.
SELECT s.id, t.code AS tenant, s.url, s.forms, s.active, s.created_at,
       (SELECT count(*) FROM webhook_delivery d WHERE d.subscription_id = s.id AND d.status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_delivery d WHERE d.subscription_id = s.id AND d.status = 'dead') AS dead
FROM webhook_subscription s JOIN tenant t ON t.id = s.tenant_id
WHERE $1::integer IS NULL OR s.tenant_id = $1
ORDER BY s.id;

-- name: webhook_get
-- Subscription $1 of tenant $2 (NULL: any tenant), with its tenant's code.
SELECT s.id, s.tenant_id, t.code AS tenant, s.url, s.forms, s.secrets, s.active
FROM webhook_subscription s JOIN tenant t ON t.id = s.tenant_id
WHERE s.id = $1 AND ($2::integer IS NULL OR s.tenant_id = $2);

-- name: webhook_remove
-- Removes subscription $1 of tenant $2 (NULL: any tenant) with its deliveries; their queued jobs find nothing.
-- Its tenant, for the audit log.
DELETE FROM webhook_subscription WHERE id = $1 AND ($2::integer IS NULL OR tenant_id = $2) RETURNING tenant_id;

-- name: webhook_lock_secrets
-- Subscription $1's secrets and tenant (of tenant $2, NULL: any), locked for a rotation.
SELECT secrets, tenant_id FROM webhook_subscription WHERE id = $1 AND ($2::integer IS NULL OR tenant_id = $2) FOR UPDATE;

-- name: webhook_set_secrets
UPDATE webhook_subscription SET secrets = $2 WHERE id = $1;

-- name: webhook_set_active
-- Pauses ($3 false) or resumes subscription $1 of tenant $2 (NULL: any tenant). Paused, its position stays:
-- resumed, it carries on from there, nothing lost.
UPDATE webhook_subscription SET active = $3 WHERE id = $1 AND ($2::integer IS NULL OR tenant_id = $2)
RETURNING tenant_id;

-- name: webhook_active_ids
-- The active subscriptions, for the dispatcher.
SELECT id FROM webhook_subscription WHERE active ORDER BY id;

-- name: webhook_claim
-- Subscription $1 locked for one dispatch, unless another dispatcher holds it (it carries on from there).
SELECT s.id, s.tenant_id, t.code AS tenant, s.forms, s.positions
FROM webhook_subscription s JOIN tenant t ON t.id = s.tenant_id
WHERE s.id = $1 AND s.active
FOR UPDATE OF s SKIP LOCKED;

-- name: webhook_set_positions
UPDATE webhook_subscription SET positions = $2 WHERE id = $1;

-- name: webhook_changed_forms
-- Which of the feeds $2 of tenant $1 hold a change past the position $3 ("xid.id.place") reached in each: only
-- those are pulled. An index probe each (change_log_pull); an entry read up to its last key is past.
SELECT p.tbl
FROM unnest($2::text[], $3::text[]) AS p(tbl, pos)
CROSS JOIN LATERAL (SELECT split_part(p.pos, '.', 1)::xid8 AS xid, split_part(p.pos, '.', 2)::bigint AS id,
                           split_part(p.pos, '.', 3)::bigint AS place) q
WHERE EXISTS (SELECT 1 FROM change_log l
              WHERE l.tenant_id = $1 AND l.tbl = p.tbl AND l.xid >= q.xid
                AND (l.xid, l.id, jsonb_array_length(l.keys)) > (q.xid, q.id, q.place));

-- name: webhook_delivery_add
-- A delivery $1 of subscription $3 (tenant $2): the body $4 holding $5 changes, to be queued.
INSERT INTO webhook_delivery (id, tenant_id, subscription_id, body, changes) VALUES ($1, $2, $3, $4, $5);

-- name: webhook_queue
-- Puts the pending deliveries that have no job yet (new ones, replayed ones) in the job queue ($1, task $2), in
-- the order they were made, in the transaction that marks them queued. A subscription's jobs share its lock,
-- so procrastinate runs them one at a time, in order, a job waiting for its retry holding back the later ones.
WITH picked AS (
    SELECT d.id, d.subscription_id FROM webhook_delivery d
    WHERE d.status = 'pending' AND NOT d.queued
      AND EXISTS (SELECT FROM webhook_subscription s WHERE s.id = d.subscription_id AND s.active)
    ORDER BY d.seq LIMIT 500
    FOR UPDATE OF d SKIP LOCKED
),
marked AS (
    UPDATE webhook_delivery d SET queued = true FROM picked p WHERE d.id = p.id
    RETURNING d.id, d.seq, d.subscription_id
)
SELECT procrastinate_defer_jobs_v1(array_agg(
           ROW($1::varchar, $2::varchar, 0, 'webhook:' || subscription_id, NULL::text,
               jsonb_build_object('delivery_id', id), NULL::timestamptz)::procrastinate_job_to_defer_v1
           ORDER BY seq))
FROM marked HAVING count(*) > 0;

-- name: webhook_delivery_for_send
-- Delivery $1 with what sending it takes.
SELECT d.id, d.body, d.status, d.attempts, d.first_attempt_at, s.url, s.secrets, s.active
FROM webhook_delivery d JOIN webhook_subscription s ON s.id = d.subscription_id
WHERE d.id = $1;

-- name: webhook_attempted
-- Records an attempt of delivery $1: its new status $2, the receiver's HTTP status $3 (or NULL), the error $4.
UPDATE webhook_delivery
SET status = $2, attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, now()),
    last_attempt_at = now(), last_status = $3, last_error = $4,
    delivered_at = CASE WHEN $2 = 'delivered' THEN now() END,
    queued = ($2 = 'pending')
WHERE id = $1;

-- name: webhook_unqueue
-- Delivery $1 of a paused subscription: left pending, queued again once the subscription is resumed.
UPDATE webhook_delivery SET queued = false WHERE id = $1 AND status = 'pending';

-- name: webhook_deliveries
-- The deliveries of tenant $1 (NULL: every tenant's), only the dead ones when $2, newest first, $3 at most.
SELECT d.id, d.subscription_id, t.code AS tenant, d.status, d.changes, d.attempts, d.last_status, d.last_error,
       d.created_at, d.last_attempt_at
FROM webhook_delivery d JOIN tenant t ON t.id = d.tenant_id
WHERE ($1::integer IS NULL OR d.tenant_id = $1) AND (NOT $2 OR d.status = 'dead')
ORDER BY d.seq DESC LIMIT $3;

-- name: webhook_replay
-- Delivery $1 of tenant $2 (NULL: any tenant) to be sent again from the start, unless it is still pending:
-- the dispatcher queues it; its id, hence its webhook-id, stays.
UPDATE webhook_delivery
SET status = 'pending', queued = false, attempts = 0, first_attempt_at = NULL, delivered_at = NULL
WHERE id = $1 AND ($2::integer IS NULL OR tenant_id = $2) AND status <> 'pending'
RETURNING tenant_id;

-- name: webhook_delivery_status
SELECT status FROM webhook_delivery WHERE id = $1 AND ($2::integer IS NULL OR tenant_id = $2);

-- name: webhook_outbox_lag
-- Seconds since the oldest delivery still pending was made (0: none), across tenants (migration 0021).
SELECT gateway_webhook_outbox_lag();

-- name: webhook_queue_private
-- The job queue's tables (procrastinate's schema) are the webhook worker's, which connects as the owner: the
-- API's role, given every table of later migrations by default, loses them.
DO $$
DECLARE
    t regclass;
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'gateway_app') THEN
        FOR t IN SELECT c.oid::regclass FROM pg_class c
                 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')
                   AND c.relname LIKE 'procrastinate\_%'
        LOOP
            EXECUTE format('REVOKE ALL ON %s FROM gateway_app', t);
        END LOOP;
    END IF;
END $$;
